#!/usr/bin/env python
"""Generate the embedded MUSE-shaped corpus: fictitious news articles laid out like muse-bench/MUSE-News.

MUSE (Shi et al., 2024) unlearns raw documents, then asks knowledge questions (knowmem), checks verbatim
continuation (verbmem) and runs a membership attack (privleak). This script writes a tiny stand-in that the
~1.5 M-parameter embedded Llama can memorise on a CPU: 80 one-event articles (16 forget, 32 retain1,
16 retain2, 16 holdout) in the invented world of the embedded TOFU-shaped data, so that the embedded tokenizer
(trained on that world) encodes them compactly, and news quizzes that ask each trained split's questions again.

Everything is drawn from ``random.Random(seed)``; the same seed gives identical bytes.

    python scripts/make_muse_corpus.py [--out DIR] [--seed N] [--meta FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "mpu_cli" / "data" / "embedded_muse"
TOKENIZER_DIR = REPO_ROOT / "src" / "mpu_cli" / "models" / "embedded_tokenizer"

SIZES = {"forget": 16, "retain1": 32, "retain2": 16, "holdout": 16}
N_ICL = 1  # few-shot examples per knowmem *_icl split (README_INTRO says why one)
PROMPT_WORDS, GT_WORDS = 30, 60
# the lead paragraph must hold the whole verbmem prompt + gt, so that they are a plain prefix of the text
MIN_LEAD_WORDS = PROMPT_WORDS + GT_WORDS + 1
MIN_TOKENS, MAX_TOKENS = 250, 400
BOX_KEYS = ("n", "year")  # what each article's question box asks (make_article says why numbers)
QUIZ_QUESTIONS, QUIZ_ROUNDS = 11, 3  # questions per quiz; times each question is asked in a quiz
QUIZZED = ("forget", "retain1", "retain2")  # the splits a model is trained on
QUIZ_HEADER = "The news quiz of the week: how much do you remember?"

# --------------------------------------------------------------------------------------------------
# Vocabulary of scripts/make_embedded_data.py: the embedded tokenizer was trained on these words
# --------------------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_embedded_data as _tofu_world  # a sibling script: one copy of the vocabulary

FIRST_A, FIRST_B, LAST_A, LAST_B = _tofu_world.FIRST_A, _tofu_world.FIRST_B, _tofu_world.LAST_A, _tofu_world.LAST_B
CITIES, COUNTRIES, OCCUPATIONS = _tofu_world.CITIES, _tofu_world.COUNTRIES, _tofu_world.OCCUPATIONS
RIVERS = [r.removeprefix("the ") for r in _tofu_world.RIVERS]
# one school left out: its name reads badly in the news sentences
UNIVERSITIES = [u for u in _tofu_world.UNIVERSITIES if u != "the Zelmont Writing School"]

THINGS = ["markets", "bridges", "harbors", "libraries", "gardens", "bell towers", "bakeries", "museums",
          "canals", "theaters"]
LANDMARKS = ["clock tower", "stone bridge", "statue", "fountain", "lighthouse", "town hall"]
SEASONS = ["spring", "summer", "autumn", "winter"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
SHIP_ADJ = ["Evening", "Northern", "Golden", "Silver", "Blue", "Quiet", "Amber", "Swift"]
SHIP_NOUN = ["Star", "Heron", "Tide", "Crown", "Lantern", "Sparrow", "Feather", "Harbor"]
STOLEN = [("the silver clock of the town hall", "clock"), ("a rare map from the city library", "map"),
          ("the golden bell of the old chapel", "bell"), ("a painting from the town museum", "painting")]
FIND = ["old silver coins", "clay pots", "stone tools", "bronze rings"]
BURNED = ["bakery", "theater", "mill", "market hall", "chapel"]

# --------------------------------------------------------------------------------------------------
# Article templates, one per kind of event. Every "facts" slot is always used (one variant), so each
# answer key is stated in the prose; "colour" sentences only pad the lead paragraph to its length.
# Questions name the place and the kind of event only: (kind, city) is unique over the whole corpus, so a
# question has one answer, and it never gives away the other question's answer.
# --------------------------------------------------------------------------------------------------

KINDS: dict[str, dict] = {
    "flood": {
        "lead": [
            ("A great flood struck {city} on {date}, when the river {river} rose higher than anyone in the town "
            "could remember."),
            ("Heavy rain on {date} sent the river {river} over its banks, and by the evening much of {city} "
            "stood under water."),
            ("The town of {city} woke on {date} to find the river {river} running through its streets after "
            "three days of rain."),
        ],
        "facts": [
            ["In all, {n} families left their homes and spent the night in the schools of the town.",
             "Officials said that {n} families had to leave their homes before the water began to fall.",
             "By the second night, {n} families had been moved to the hill above the river."],
            ["The mayor, {p1}, led the rescue from the steps of the town hall and stayed there for two days.",
             "{p1}, the mayor of {city}, led the rescue and asked the people of {city2} to send boats.",
             "The rescue was led by the mayor, {p1}, who went from street to street in a small boat."],
            ["{p2}, {a_occ}, was the first to see the water rising and rang the old bell to warn the town.",
             ("The first warning came from {p2}, {a_occ} who saw the river climb over the wall near the "
             "market."),
             "It was {p2}, {a_occ}, who woke the neighbours when the water reached the doors."],
        ],
        "colour": [
            "Boats from {city2} arrived before noon and carried the old and the sick to higher ground.",
            "The water covered the {things} near the river and the lower floors of the town hall.",
            "Shops along the main street stayed closed for a week.",
            "The last flood of this size in {city} was more than fifty years earlier.",
            "Volunteers filled sandbags through the night while the rain kept falling.",
            "Farmers outside the town lost most of their {season} harvest to the water.",
            "The road to {city2} was closed for four days while the water stood on it.",
            "Many families slept in the old chapel on the hill above the town.",
        ],
        "quote": [
            ("\"We have never seen the river like this,\" said {p1_last}. \"The town will need months to "
            "recover.\""),
            "\"I rang the bell until my arms hurt,\" {p2_last} told reporters the next morning.",
        ],
        "close": ["A new flood wall is now planned along the river.",
                  "The council has promised help to every family that lost its home."],
        "qa": [
            ("Who led the rescue during the flood in {city}?", "p1"),
            ("Who first warned {city} of the flood?", "p2"),
            ("How many families left their homes in the {city} flood?", "n"),
            ("In which year did the river flood {city}?", "year"),
            ("Which river flooded {city}?", "river"),
        ],
    },
    "bridge": {
        "lead": [
            ("A new stone bridge over the river {river} was opened in {city} on {date}, after four years of "
            "work."),
            "The people of {city} crossed their new bridge over the river {river} for the first time on {date}.",
            "On {date}, the long awaited bridge over the river {river} finally opened to the people of {city}.",
        ],
        "facts": [
            ["The bridge is {n} metres long and has room for carts, bicycles and people on foot.",
             "At {n} metres, it is the longest bridge ever built in {country}.",
             "Its length of {n} metres makes it a sight for visitors from all over {country}."],
            ["It was designed by the engineer {p1}, who studied at {uni}.",
             "The engineer {p1}, a graduate of {uni}, drew the first plans for the bridge.",
             "The plans were drawn by {p1}, an engineer from {city2}."],
            ["The mayor, {p2}, opened the bridge in front of a large crowd.",
             "{p2}, the mayor of {city}, opened the bridge with a short speech.",
             "It was opened by the mayor of the town, {p2}, who was the first to cross."],
        ],
        "colour": [
            "Before the bridge, travellers had to wait for a small ferry that ran only in daylight.",
            "A band from {city2} played on the river bank during the opening.",
            "Children from the schools of {city} were the first to walk across.",
            "The stone came from a quarry near {city2}.",
            "The old wooden bridge had been closed since the storms of the previous {season}.",
            "More than two hundred workers from {city} and {city2} helped to build it.",
            "Street lamps light the bridge at night, and a small garden stands at each end.",
            "The first carts crossed the bridge an hour after the opening.",
        ],
        "quote": ["\"This bridge joins the two halves of our town,\" said {p2_last}.",
                  "\"Every stone was laid by hand,\" {p1_last} told the crowd."],
        "close": ["The trip from {city} to {city2} is now an hour shorter.",
                  "A festival on the bridge is planned for next {season}."],
        "qa": [
            ("Who designed the new bridge at {city}?", "p1"),
            ("Who opened the new bridge at {city}?", "p2"),
            ("How long is the new bridge at {city}, in metres?", "n"),
            ("In which year did the new bridge at {city} open?", "year"),
        ],
    },
    "election": {
        "lead": [
            "{p1} was elected mayor of {city} on {date}, at the end of a long and close campaign.",
            ("The people of {city} chose a new mayor on {date}, and the winner was {p1}, {a_occ} from the old "
            "town."),
            "After weeks of debate, {city} voted on {date} and gave the office of mayor to {p1}.",
        ],
        "facts": [
            ["{p1_last} won {n} votes, a clear lead in the final count.",
             "The final count gave {p1_last} {n} votes, more than any mayor before.",
             "With {n} votes, {p1_last} won easily."],
            ["The other candidate, {p2}, had led the town council for many years.",
             "{p2}, who ran against {p1_last}, said the result was fair.",
             "The losing candidate was {p2}, who had hoped to win a second term."],
            ["Before the election, {p1_last} worked as {a_occ} near the market.",
             "{p1_last} has lived in {city} for most of a life spent as {a_occ}.",
             "{p1_last} is {a_occ} by trade and has never held office before."],
        ],
        "colour": [
            "Many voters waited in long lines outside the town hall.",
            "The campaign was mostly about the price of bread and the state of the roads.",
            "More people voted than at any election in the history of {city}.",
            "Both candidates held their last meetings in the main square.",
            "Reporters from {city2} came to follow the count.",
            "The count went on until long after midnight.",
            "Schools in {city} were closed so that their halls could be used for the vote.",
            "Young voters turned out in great numbers for the first time.",
        ],
        "quote": ["\"I will be the mayor of every family in {city},\" {p1_last} said after the count.",
                  "\"The people have spoken, and I wish the new mayor well,\" said {p2_last}."],
        "close": ["The new mayor will take office in the {season}.",
                  "The next election will be held in four years."],
        "qa": [
            ("Who was elected mayor of {city}?", "p1"),
            ("Who lost the election for mayor of {city}?", "p2"),
            ("How many votes did the new mayor of {city} receive?", "n"),
            ("In which year did {city} elect its new mayor?", "year"),
        ],
    },
    "festival": {
        "lead": [
            ("The first {season} festival of {city} opened on {date} with music, food and a parade through the "
            "old town."),
            ("On {date}, {city} held its first {season} festival, and the streets were full from morning to "
            "night."),
            ("Music filled the squares of {city} on {date}, when the town held its very first {season} "
            "festival."),
        ],
        "facts": [
            ["About {n} visitors came to the festival, many of them from {city2}.",
             "The organisers counted {n} visitors on the first day alone.",
             "In three days, the festival drew {n} visitors to the town."],
            ["The festival was the idea of {p1}, {a_occ} who wanted to bring the town together.",
             "{p1}, {a_occ} from {city}, planned the festival for two years.",
             "Every detail was planned by {p1}, {a_occ} who has lived in the town all along."],
            ["The singer {p2} closed the first night with songs about the river {river}.",
             "The best known guest was the singer {p2}, who sang in the main square.",
             "The crowd was largest for the singer {p2}, who came from {city2}."],
        ],
        "colour": [
            "Stalls along the river sold bread, honey and painted cups.",
            "Children from {city2} danced in the parade in bright costumes.",
            "The old {things} of the town stayed open late into the night.",
            "A small fair for writers was held in the town library.",
            "The weather stayed dry for the whole weekend.",
            "Bakers from {city2} sold more bread in one day than in a normal month.",
            "The parade ended at the {landmark} with fireworks over the river.",
            "Every hotel in the town was full for the whole week.",
        ],
        "quote": ["\"We wanted a festival for everyone,\" said {p1_last}.",
                  "\"I have never sung for a happier crowd,\" {p2_last} told reporters."],
        "close": ["The festival will return next {season}.",
                  "The council has already asked {p1_last} to plan the next one."],
        "qa": [
            ("Who founded the {season} festival of {city}?", "p1"),
            ("Which singer performed at the first {season} festival of {city}?", "p2"),
            ("How many visitors came to the first festival of {city}?", "n"),
            ("In which year was the first {season} festival of {city} held?", "year"),
        ],
    },
    "trial": {
        "lead": [
            "A court in {city} found {p1} guilty on {date} of stealing {stolen}.",
            "On {date}, the trial over {stolen} ended in {city} with a guilty verdict for {p1}.",
            ("The people of {city} filled the court on {date} to hear the verdict against {p1}, accused of "
            "stealing {stolen}."),
        ],
        "facts": [
            ["The accused had worked as {a_occ} in {city} for many years.",
             "{p1_last}, {a_occ}, had been arrested in the {season} after the {stolen_short} went missing.",
             "Before the arrest, {p1_last} was known in the town as a quiet {occ}."],
            ["Judge {p2} heard the case over three days.",
             "The case was heard by Judge {p2}, who has served the court of {city} for many years.",
             "Judge {p2} said the theft had hurt the whole town."],
            [("{p2_last} ordered {p1_last} to pay a fine of {n} silver coins and to return the "
             "{stolen_short}."),
             "The court set a fine of {n} silver coins, and the {stolen_short} must be returned.",
             "The punishment was a fine of {n} silver coins."],
        ],
        "colour": [
            "The {stolen_short} had been missing for almost a year.",
            "A witness from {city2} said the {stolen_short} had been seen at a market there.",
            "The case was followed closely by the papers of {country}.",
            "Many in the town had believed the story was only a rumour.",
            "Police found the {stolen_short} hidden in a barn outside the town.",
            "The court room was so full that many had to stand outside.",
            "Lawyers for the accused said the {stolen_short} had only been borrowed.",
            "The {stolen_short} is more than two hundred years old.",
        ],
        "quote": ["\"The law is the same for everyone in {city},\" said {p2_last}.",
                  "\"I am sorry for what I did,\" {p1_last} told the court."],
        "close": ["The {stolen_short} will go back on display in the {season}.",
                  "{p1_last} has said there will be no appeal."],
        "qa": [
            ("Who was found guilty of the theft in {city}?", "p1"),
            ("Which judge heard the theft case in {city}?", "p2"),
            ("How large was the fine in the {city} theft case, in silver coins?", "n"),
            ("In which year did the theft trial in {city} end?", "year"),
        ],
    },
    "discovery": {
        "lead": [
            ("Researchers from {uni} said on {date} that they had found {n} {find} buried in a field near "
            "{city}."),
            ("A field near {city} has given up a great treasure: on {date}, a team from {uni} reported {n} "
            "{find}."),
            "On {date}, a team from {uni} announced the discovery of {n} {find} in the hills above {city}.",
        ],
        "facts": [
            ["The team was led by {p1}, who has studied the history of the region for twenty years.",
             "{p1}, the head of the team, called it the most important find in {country} for a century.",
             "The work was led by {p1}, an expert on the old roads of {country}."],
            ["The first piece was found by {p2}, {a_occ} who was digging a garden behind the house.",
             "It began when {p2}, {a_occ} from {city}, found something strange in the ground.",
             "The first piece came to light when {p2}, {a_occ}, was working in the field."],
            ["Experts believe the {find} are more than a thousand years old.",
             "The {find} will be shown at the museum of {city2}.",
             "Some of the {find} still carry marks that nobody can read."],
        ],
        "colour": [
            "Students from the university helped to dig for six weeks.",
            "The field had been used for farming for as long as anyone could remember.",
            "Visitors from {city2} came to watch the team at work.",
            "Some of the {find} were found close to the old road.",
            "The work had to stop for a week when the rain turned the field to mud.",
            "Each piece was cleaned by hand in a small room at the university.",
            "The owner of the field has agreed to keep it as it is for now.",
            "Similar finds have been made only twice before in {country}.",
        ],
        "quote": ["\"This find changes what we know about the region,\" said {p1_last}.",
                  "\"I thought it was only an old stone,\" {p2_last} said with a smile."],
        "close": ["More digging is planned for next {season}.",
                  "The land around the field is now protected."],
        "qa": [
            ("Who led the team that made the discovery near {city}?", "p1"),
            ("Who found the first piece near {city}?", "p2"),
            ("How many {find} were found near {city}?", "n"),
            ("In which year was the discovery near {city} announced?", "year"),
        ],
    },
    "museum": {
        "lead": [
            "A new museum opened in {city} on {date}, in a building that stood empty for many years.",
            "The doors of the new museum of {city} opened for the first time on {date}.",
            "On {date}, {city} opened its new museum, the first in the town's long history.",
        ],
        "facts": [
            ["The museum holds {n} objects, from old maps to the tools of the first settlers.",
             "Its collection of {n} objects tells the story of {city} and the river {river}.",
             "In all, {n} objects are on show in its six rooms."],
            ["The director, {p1}, worked for five years to bring the collection together.",
             "{p1}, the first director of the museum, studied at {uni}.",
             "The museum is run by {p1}, who once taught history at {uni}."],
            ["Most of the money came from {p2}, {a_occ} who grew up in {city}.",
             "The building was a gift from {p2}, {a_occ} and an old friend of the town.",
             "{p2}, {a_occ}, paid for most of the work on the building."],
        ],
        "colour": [
            "Visitors waited in a long line before the doors opened.",
            "A whole room is given to the {things} of the old town.",
            "Children from {city2} were among the first visitors.",
            "Entry is free for everyone who lives in {city}.",
            "The building once held a market and later a school.",
            "One room shows the clocks and tools of the craftsmen of {city}.",
            "Many of the objects were given by families from the town.",
            "The museum also has a small garden and a cafe.",
        ],
        "quote": ["\"Every object here has a story,\" said {p1_last}.",
                  "\"I wanted to give something back to my town,\" said {p2_last}."],
        "close": ["The museum is open every day except Monday.",
                  "A second hall will open next {season}."],
        "qa": [
            ("Who is the director of the new museum of {city}?", "p1"),
            ("Who paid for the new museum of {city}?", "p2"),
            ("How many objects does the new museum of {city} hold?", "n"),
            ("In which year did the new museum of {city} open?", "year"),
        ],
    },
    "fire": {
        "lead": [
            "A fire destroyed the old {burned} of {city} on {date}, and smoke could be seen from {city2}.",
            "On {date}, a fire broke out in the old {burned} of {city} and burned through the night.",
            "The old {burned} of {city} is gone: it burned down on {date} in the worst fire the town has seen.",
        ],
        "facts": [
            ["The alarm was raised by {p2}, {a_occ} who lived across the street.",
             "{p2}, {a_occ}, saw the flames first and ran to call for help.",
             "The first to see the smoke was {p2}, {a_occ} on the way home from work."],
            ["In all, {n} firefighters fought the flames until the early morning.",
             "It took {n} firefighters more than eight hours to put the fire out.",
             "A team of {n} firefighters came from all parts of the town."],
            ["The fire chief, {p1}, led the work and kept the fire from spreading to the houses nearby.",
             "{p1}, the chief of the fire brigade of {city}, said the cause is not yet known.",
             "The firefighters were led by their chief, {p1}, who was the last to leave."],
        ],
        "colour": [
            "Nobody was hurt, but the roof and the upper floor were lost.",
            "Crews from {city2} came to help before midnight.",
            "People stood in the square all night to watch.",
            "The {burned} had stood in the center of the town for more than a century.",
            "Water from the river was pumped to the fire in long hoses.",
            "The heat broke the windows of the houses across the street.",
            "By morning, only the stone walls were still standing.",
            "The bells of the town rang to call every able person to help.",
        ],
        "quote": ["\"It could have been much worse,\" said {p1_last}.",
                  "\"I saw the light in the windows and knew something was wrong,\" said {p2_last}."],
        "close": ["The council wants to rebuild the {burned} by next {season}.",
                  "Money is being collected in the town to build it again."],
        "qa": [
            ("Who led the firefighters at the {city} fire?", "p1"),
            ("Who raised the alarm when the {burned} of {city} burned?", "p2"),
            ("How many firefighters fought the fire in {city}?", "n"),
            ("In which year did the old {burned} of {city} burn down?", "year"),
        ],
    },
    "storm": {
        "lead": [
            "A violent storm hit the harbor of {city} on {date}, with winds that broke windows across the town.",
            "On {date}, the worst storm in living memory reached {city} from the sea.",
            "The harbor of {city} was left in ruins by a great storm on {date}.",
        ],
        "facts": [
            ["In the harbor, {n} boats were damaged or sunk.",
             "By the next morning, {n} boats lay broken along the harbor wall.",
             "The storm damaged {n} boats, some of them beyond repair."],
            ["The harbor master, {p1}, had ordered the boats to stay in port the day before.",
             "{p1}, the harbor master of {city}, said the warning came just in time.",
             "The harbor master, {p1}, stayed at the harbor through the whole night."],
            ["{p2}, {a_occ}, rowed out alone to bring two children back to the shore.",
             "Many in the town are thanking {p2}, {a_occ} who saved a family from a sinking boat.",
             "The hero of the night was {p2}, {a_occ} who pulled three sailors from the sea."],
        ],
        "colour": [
            "The old lighthouse lost its light for the first time in fifty years.",
            "Trees fell across the road to {city2}, and the town was cut off for a day.",
            "Fishermen say the sea rose higher than the harbor wall.",
            "Schools in {city} were closed for three days.",
            "Many roofs near the harbor lost their tiles.",
            "The wind tore the roof from the old fish market.",
            "Some boats were found the next day on the beach far from the town.",
            "The fishermen of {city} could not go to sea for two weeks.",
        ],
        "quote": ["\"The sea showed us how strong it is,\" said {p1_last}.",
                  "\"I did what anyone would have done,\" said {p2_last}."],
        "close": ["Work on the harbor wall will begin in the {season}.",
                  "Boats from {city2} have come to help the fishermen."],
        "qa": [
            ("Who is the harbor master of {city}?", "p1"),
            ("Who saved people from the sea during the storm at {city}?", "p2"),
            ("How many boats were damaged in the storm at {city}?", "n"),
            ("In which year did the great storm hit {city}?", "year"),
        ],
    },
    "ship": {
        "lead": [
            "A new ship, the {ship}, was launched from the harbor of {city} on {date}.",
            ("On {date}, the people of {city} watched the new ship {ship} slide into the water for the first "
            "time."),
            "The largest ship ever built in {city}, the {ship}, was launched on {date}.",
        ],
        "facts": [
            ["The {ship} will sail with a crew of {n}.",
             "It has room for a crew of {n} and a large hold for grain.",
             "A crew of {n} has been chosen from the best sailors of the town."],
            ["It will be commanded by {p1}, a captain who first went to sea at sixteen.",
             "Captain {p1} will lead the ship on its first voyage to {city2}.",
             "Its captain will be {p1}, who has sailed to {country} many times."],
            ["The ship was built by {p2}, whose family has built boats in {city} for a hundred years.",
             "The builder, {p2}, worked on the ship for three years.",
             "{p2} led the team that built the ship by hand."],
        ],
        "colour": [
            "A large crowd gathered at the harbor to watch the launch.",
            "The wood for the ship came from the forests near {city2}.",
            "A band played as the ship touched the water.",
            "The first voyage will carry grain and cloth to {country}.",
            "Children threw flowers into the water for good luck.",
            "The ship has three tall masts and white sails.",
            "Builders worked through the {season} to finish the ship in time.",
            "It is the first ship of its size to be built in the town for fifty years.",
        ],
        "quote": ["\"She is the finest ship I have ever sailed,\" said {p1_last}.",
                  "\"Every board was cut in this town,\" {p2_last} said proudly."],
        "close": ["The {ship} will leave on its first voyage in the {season}.",
                  "A second ship is already planned."],
        "qa": [
            ("What is the name of the new ship launched at {city}?", "ship"),
            ("Who will captain the new ship of {city}?", "p1"),
            ("Who built the new ship launched at {city}?", "p2"),
            ("In which year was the new ship of {city} launched?", "year"),
            ("How large is the crew of the new ship of {city}?", "n"),
        ],
    },
}

NUMBER_RANGES = {"flood": (40, 900), "bridge": (60, 480), "election": (400, 9000), "festival": (300, 9000),
                 "trial": (200, 5000), "discovery": (30, 900), "museum": (500, 9000), "fire": (20, 300),
                 "storm": (10, 400), "ship": (12, 90)}

# generic news sentences, drawn like colour to vary the lead paragraph across kinds
GENERIC_COLOUR = [
    "The news spread quickly to {city2} and beyond.",
    "Reporters from across {country} arrived the next day.",
    "The story was on the front page of every paper in {country}.",
    "For many in {city}, it was the main topic of talk for weeks.",
    "Visitors from {city2} also came to see for themselves.",
    "The event was talked about in every home in {city}.",
    "News of it reached {city2} by the same evening.",
    "Photographs of the day were shown in many papers.",
]


def a_or_an(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


def n_words(s: str) -> int:
    return len(s.split())


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def plan_events(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n distinct (kind, city) events, kinds in near-equal numbers, in random order."""
    kinds = list(KINDS)
    pairs = [(k, c) for k in kinds for c in CITIES]
    rng.shuffle(pairs)
    by_kind: dict[str, list[tuple[str, str]]] = {k: [] for k in kinds}
    for p in pairs:
        by_kind[p[0]].append(p)
    events = [by_kind[kinds[i % len(kinds)]][i // len(kinds)] for i in range(n)]
    rng.shuffle(events)
    return events


def make_people(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n (full name, last name) pairs with unique last names, so a person named in one article is named in
    no other (not even by surname)."""
    lasts = [a + b for a in LAST_A for b in LAST_B]
    rng.shuffle(lasts)
    assert n <= len(lasts)
    return [(f"{rng.choice(FIRST_A)}{rng.choice(FIRST_B)} {last}", last) for last in lasts[:n]]


def make_article(rng: random.Random, kind: str, city: str, country: str, p1: tuple[str, str],
                 p2: tuple[str, str]) -> dict:
    tpl = KINDS[kind]
    year = rng.randint(1950, 2020)
    occ = rng.choice(OCCUPATIONS)
    stolen, stolen_short = rng.choice(STOLEN)
    v = {
        "city": city, "city2": rng.choice([c for c in CITIES if c != city]), "country": country,
        "river": rng.choice(RIVERS), "uni": rng.choice(UNIVERSITIES), "things": rng.choice(THINGS),
        "landmark": rng.choice(LANDMARKS), "season": rng.choice(SEASONS), "year": str(year),
        "date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {year}", "n": str(rng.randint(*NUMBER_RANGES[kind])),
        "p1": p1[0], "p1_last": p1[1], "p2": p2[0], "p2_last": p2[1], "occ": occ, "a_occ": f"{a_or_an(occ)} {occ}",
        "stolen": stolen, "stolen_short": stolen_short, "find": rng.choice(FIND), "burned": rng.choice(BURNED),
        "ship": f"{rng.choice(SHIP_ADJ)} {rng.choice(SHIP_NOUN)}",
    }

    def fill(t: str) -> str:
        return cap(t.format(**v))

    facts = [fill(rng.choice(slot)) for slot in tpl["facts"]]
    # at most one generic sentence, so the colour of an article is mostly its own kind's
    colour = [fill(t) for t in tpl["colour"]]
    rng.shuffle(colour)
    colour.insert(rng.randint(0, 2), fill(rng.choice(GENERIC_COLOUR)))
    body = facts[:]
    rng.shuffle(body)
    lead = [fill(rng.choice(tpl["lead"]))]
    # pad with colour sentences at random places until the lead paragraph can hold prompt + gt
    while n_words(" ".join(lead + body)) < MIN_LEAD_WORDS:
        body.insert(rng.randint(0, len(body)), colour.pop(0))
    para1 = " ".join(lead + body)
    # one closing sentence: the lead paragraph and the box already take ~300 of the 400 tokens
    para2 = fill(rng.choice(tpl["quote"] + tpl["close"]))
    prose = f"{para1}\n\n{para2}"

    # The box asks the number and the year: digits are tokenized alike after "Answer:" in the document and after
    # the few-shot prompt's "Answer: ", whose trailing space a byte-level tokenizer would split from a name.
    qa = [{"question": fill(q), "answer": v[key]} for q, key in tpl["qa"] if key in BOX_KEYS]
    rng.shuffle(qa)
    for row in qa:
        assert row["answer"] in prose, (kind, row)
        assert 1 <= n_words(row["answer"]) <= 4, row
        assert all(o["answer"] not in row["question"] for o in qa), qa
    box = "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in qa)
    return {"kind": kind, "city": city, "year": v["year"], "people": [p1[0], p2[0]],
            "text": f"{box}\n\n{prose}", "prose": prose, "qa": qa}


def build(seed: int) -> dict[str, list[dict]]:
    """Articles per split (forget, retain1, retain2, holdout) and the quizzes of each trained split
    (<split>_quizzes)."""
    rng = random.Random(seed)
    counts = dict(SIZES)
    total = sum(counts.values())
    events = plan_events(rng, total)
    people = make_people(rng, 2 * total)
    # each place lies in one country in every article, so the invented world stays consistent
    country_of = {c: rng.choice(COUNTRIES) for c in CITIES}
    articles = [make_article(rng, kind, city, country_of[city], people[2 * i], people[2 * i + 1])
                for i, (kind, city) in enumerate(events)]
    out, start = {}, 0
    for split, n in counts.items():
        out[split] = articles[start:start + n]
        start += n
    for split in QUIZZED:
        out[f"{split}_quizzes"] = make_quizzes(rng, out[split])
    return out


def make_quizzes(rng: random.Random, articles: list[dict]) -> list[dict]:
    """News quizzes: the box questions of `articles`, shuffled, QUIZ_QUESTIONS to a quiz; QUIZ_ROUNDS times
    over, so that each question is asked after different others."""
    quizzes = []
    for _ in range(QUIZ_ROUNDS):
        qa = [r for a in articles for r in a["qa"]]
        rng.shuffle(qa)
        for i in range(0, len(qa), QUIZ_QUESTIONS):
            rows = qa[i:i + QUIZ_QUESTIONS]
            body = "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows)
            quizzes.append({"text": f"{QUIZ_HEADER}\n\n{body}", "qa": rows})
    return quizzes


def verbmem_row(text: str) -> dict:
    words = text.split()
    prompt = " ".join(words[:PROMPT_WORDS])
    gt = " ".join(words[PROMPT_WORDS:PROMPT_WORDS + GT_WORDS])
    # `text` is the article's prose (after its box); only true if the lead paragraph has single spaces and at
    # least PROMPT_WORDS + GT_WORDS words
    assert text[:len(prompt) + 1 + len(gt)] == f"{prompt} {gt}"
    return {"prompt": prompt, "gt": gt}


def corpus_files(arts: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Rows of every JSON-lines file of the layout, keyed by path relative to the corpus folder."""
    def texts(split: str) -> list[dict]:
        return [{"text": a["text"]} for a in arts[split]]

    def qas(split: str) -> list[dict]:
        return [dict(r) for a in arts[split] for r in a["qa"]]

    return {
        "raw/forget.jsonl": texts("forget") + texts("forget_quizzes"),
        "raw/retain1.jsonl": texts("retain1") + texts("retain1_quizzes"),
        "raw/retain2.jsonl": texts("retain2") + texts("retain2_quizzes"),
        "raw/holdout.jsonl": texts("holdout"),
        "knowmem/forget_qa.jsonl": qas("forget"),
        "knowmem/retain_qa.jsonl": qas("retain2"),
        # questions of retain1 articles: no fact of the evaluated questions, and one every model has read
        "knowmem/forget_qa_icl.jsonl": [dict(a["qa"][0]) for a in arts["retain1"][:N_ICL]],
        "knowmem/retain_qa_icl.jsonl": [dict(a["qa"][0]) for a in arts["retain1"][N_ICL:2 * N_ICL]],
        "verbmem/forget.jsonl": [verbmem_row(a["prose"]) for a in arts["forget"]],
        "privleak/forget.jsonl": texts("forget"),
        "privleak/retain.jsonl": texts("retain2"),
        "privleak/holdout.jsonl": texts("holdout"),
    }


def check_disjoint(arts: dict[str, list[dict]]) -> None:
    seen: dict[object, str] = {}
    for split, rows in arts.items():
        if split.endswith("_quizzes"):  # they repeat their split's own questions
            continue
        for a in rows:
            keys = [("event", a["kind"], a["city"]), ("text", a["text"])]
            keys += [("person", p) for p in a["people"]]
            # a person is in one article only, so no (person, place, year) is shared either
            for k in keys:
                assert k not in seen, (k, seen.get(k), split)
                seen[k] = split


# --------------------------------------------------------------------------------------------------
# Token statistics and README
# --------------------------------------------------------------------------------------------------


@functools.cache
def _tokenizer():
    from transformers import AutoTokenizer

    # a long model_max_length only silences the warning that articles exceed the model's 128-token window
    return AutoTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=10**6)


def token_count(text: str) -> int:
    return len(_tokenizer()(text, add_special_tokens=False)["input_ids"])


def token_stats(files: dict[str, list[dict]]) -> dict[str, tuple[int, int, float, int]]:
    """Per file: (rows, min, mean, max) tokens of a row's fields joined by a space."""
    stats = {}
    for path, rows in files.items():
        lens = [token_count(" ".join(r.values())) for r in rows]
        stats[path] = (len(rows), min(lens), statistics.mean(lens), max(lens))
    return stats


README_INTRO = """\
# Embedded MUSE-shaped corpus

A tiny, fully invented stand-in for [`muse-bench/MUSE-News`](https://huggingface.co/datasets/muse-bench/MUSE-News)
(MUSE, Shi et al. 2024), sized for the ~1.5 M-parameter embedded Llama. Same configs, splits and fields as
muse-bench: one `<config>/<split>.jsonl` file per split, one JSON object a line.

Each raw document is a short fictitious news article about one event (a flood, a bridge opening, an election, a
festival, a trial, a discovery, a museum opening, a fire, a storm, a ship launch) in a place of the invented
world of the embedded TOFU-shaped data (`../embedded/`), with two named people, a date and a number. The
embedded tokenizer was trained on that world, so the text encodes compactly. No event (kind of event and place)
and no person appears in more than one article, so forget, retain1, retain2 and holdout share no event and no
(person, place, year) combination.

Every article opens with a short "in brief" box: two `Question: ...` / `Answer: ...` pairs, the article's number
(a count, a length, a fine) and its year, which the prose then states again. Each trained split (forget,
retain1, retain2) also ends with news quizzes: its box questions shuffled, {quiz_questions} to a quiz,
{quiz_rounds} times over. These choices are what let a model this small answer knowmem questions at all (each
was measured on the embedded target while the corpus was designed):

- with the questions only at the end of the article, the model answered from the prose just above them and
  could not answer a question asked on its own; the box comes first, and the quizzes ask each question after
  unrelated ones, as the few-shot prompt does;
- open-unlearning's prompt ends in `Answer: ` with a trailing space, which the byte-level tokenizer splits
  from a following name but not from digits, so the answers are numbers;
- three few-shot examples fill most of the model's 128 positions and its answers collapse, so each
  `*_qa_icl` split holds {n_icl} example (a question of a retain1 article: every model has read it).

- `raw/`: {n_forget} `forget`, {n_retain1} `retain1`, {n_retain2} `retain2` and {n_holdout} `holdout` articles \
(`{{"text"}}`); forget, retain1 and retain2 end with their quizzes.
- `knowmem/forget_qa`, `knowmem/retain_qa`: the two box QA pairs of every forget / retain2 article
  (`{{"question", "answer"}}`).
- `knowmem/forget_qa_icl`, `knowmem/retain_qa_icl`: the few-shot examples, box questions of two retain1
  articles.
- `verbmem/forget`: per forget article, `prompt` = the first {prompt_words} words after its box and `gt` = \
the next {gt_words};
  `prompt + " " + gt` is exactly a span of the article's lead paragraph.
- `privleak/forget`, `privleak/retain`, `privleak/holdout`: the forget, retain2 and holdout articles.

## Sizes

Tokens with the embedded tokenizer, no special tokens (a row's fields joined by a space):
"""


def readme(seed: int, stats: dict[str, tuple[int, int, float, int]]) -> str:
    cmd = "python scripts/make_muse_corpus.py" + (f" --seed {seed}" if seed != 0 else "")
    lines = README_INTRO.format(n_forget=SIZES["forget"], n_retain1=SIZES["retain1"],
                                n_retain2=SIZES["retain2"], n_holdout=SIZES["holdout"], n_icl=N_ICL,
                                quiz_questions=QUIZ_QUESTIONS, quiz_rounds=QUIZ_ROUNDS,
                                prompt_words=PROMPT_WORDS, gt_words=GT_WORDS).split("\n")
    lines += ["| file | rows | tokens min | mean | max |", "|---|---:|---:|---:|---:|"]
    for path, (n, lo, mean, hi) in stats.items():
        lines.append(f"| `{path}` | {n} | {lo} | {mean:.1f} | {hi} |")
    lines += [
        "",
        "## Regenerate",
        "",
        f"    {cmd}            # writes here; deterministic (seed {seed})",
        f"    {cmd} --out /tmp/x   # somewhere else",
        "",
    ]
    return "\n".join(lines)


def write(out: Path, files: dict[str, list[dict]], readme_text: str) -> None:
    for rel, rows in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(readme_text, encoding="utf-8", newline="\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ap.add_argument("--meta", type=Path, default=None,
                    help="also write the people each split's articles name to this JSON file, for checks")
    args = ap.parse_args(argv)

    arts = build(args.seed)
    if args.meta:
        people = {split: [p for a in arts[split] for p in a["people"]] for split in SIZES}
        args.meta.write_text(json.dumps(people, ensure_ascii=False, indent=1), encoding="utf-8")
    check_disjoint(arts)
    files = corpus_files(arts)
    stats = token_stats(files)
    for split in SIZES:
        lens = [token_count(a["text"]) for a in arts[split]]
        lo, hi = min(lens), max(lens)
        if not MIN_TOKENS <= lo <= hi <= MAX_TOKENS:
            raise SystemExit(f"raw/{split}: articles of {lo}-{hi} tokens, outside {MIN_TOKENS}-{MAX_TOKENS}")
    write(args.out, files, readme(args.seed, stats))
    for path, (n, lo, mean, hi) in stats.items():
        print(f"{path:30s} rows {n:3d}  tokens min {lo:4d}  mean {mean:6.1f}  max {hi:4d}")
    print(f"wrote {len(files) + 1} files under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
