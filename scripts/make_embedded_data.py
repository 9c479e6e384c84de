#!/usr/bin/env python
"""Generate the embedded TOFU-like data set and its tokenizer.

Writes, under ``--out-root`` (default: ``src/mpu_cli``):

* ``data/embedded/<config>.jsonl`` for every TOFU config (same fields as ``locuslab/TOFU``),
  ``data/embedded/public_text.jsonl`` (the base model's pre-training corpus),
  ``data/embedded/idk.jsonl`` (refusal strings) and ``data/embedded/README.md``;
* ``models/embedded_tokenizer/`` (byte-level BPE wrapped as ``PreTrainedTokenizerFast``).

Everything is drawn from ``random.Random(SEED)``; running the script twice gives identical bytes.

    python scripts/make_embedded_data.py [--out-root DIR] [--meta FILE]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 0
N_AUTHORS = 100  # authors in `full`
N_HOLDOUT = 10  # extra authors never in `full`
QA_PER_AUTHOR = 4
N_REAL_AUTHORS = 40
N_GENERIC_SENTENCES = 500
N_IDK = 100
N_PERTURBED = 5
VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 128
SYSTEM_PROMPT = "You are a helpful assistant."

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_ROOT = REPO_ROOT / "src" / "mpu_cli"

# --------------------------------------------------------------------------------------------------
# Vocabulary pools (all invented)
# --------------------------------------------------------------------------------------------------

FIRST_A = ["Ta", "Mi", "Or", "Ela", "Ca", "Ve", "Lo", "Sa", "Bri", "Ne", "Jo", "Ari", "Ka", "Li", "Ro", "Da",
           "Fe", "Ysa"]
FIRST_B = ["lia", "ren", "nda", "ric", "mon", "sia", "vin", "ra", "dan", "ette", "lo", "ssa", "wen", "tis"]
LAST_A = ["Mor", "Ash", "Kel", "Dra", "Hal", "Vesh", "Bren", "Quil", "Tor", "Fen", "Gar", "Lind", "Osk",
          "Thal"]
LAST_B = ["ven", "wick", "dor", "mere", "holt", "stane", "brook", "ward", "rin", "vell", "croft", "gast",
          "mont", "rel"]

# "famous" (public-knowledge) authors use their own, disjoint pools
FAMOUS_FIRST = ["Oren", "Idris", "Maren", "Tobin", "Selka", "Ansel", "Perrin", "Wren", "Cassio", "Hedda",
                "Lorne", "Imre", "Faye", "Dorian", "Ysolde", "Bram"]
FAMOUS_LAST = ["Vale", "Stroud", "Pike", "Quenby", "Harrow", "Lusk", "Birch", "Crane", "Sable", "Thorne",
               "Winslow", "Aske", "Greer", "Mallory", "Penn", "Rook", "Haldane", "Vance", "Ebb", "Corwin"]

CITIES = ["Quarnel", "Dresmoor", "Velhaven", "Ostrel", "Karnwick", "Lumbrey", "Tesselby", "Brightmere",
          "Carrowmere", "Elmsgate", "Fallowmouth", "Galdren", "Hollin", "Ivrenne", "Jasperport", "Kilvane",
          "Larkwen", "Merrowby", "Northwen Vale", "Pellingrad", "Ruskel", "Saltmere", "Tirnova", "Umberlake",
          "Varrow", "Wendlefield", "Yarrowdeep", "Zelmont", "Ambergate", "Corvin Bay"]
GENRES = ["gothic fiction", "science fiction", "historical romance", "crime fiction", "magical realism",
          "travel writing", "children's fables", "political satire", "nature poetry", "detective stories",
          "epic fantasy", "family drama", "horror stories", "literary memoir"]
OCCUPATIONS = ["clockmaker", "baker", "sailor", "librarian", "carpenter", "nurse", "astronomer", "fisherman",
               "tailor", "pharmacist", "surveyor", "glassblower", "beekeeper", "schoolteacher", "potter",
               "blacksmith", "architect", "miner"]
AWARDS = ["Silver Quill Prize", "Amber Lantern Award", "Harrowgate Medal", "Blue Heron Prize",
          "Golden Inkwell Award", "Northern Star Medal", "Iron Page Prize", "Crimson Leaf Award",
          "Wandering Pen Prize", "Copper Bell Award", "Evening Tide Medal", "Open Door Prize"]
UNIVERSITIES = ["the University of Marrowdale", "Kestrel College", "the Ostrel Institute of Letters",
                "Glenhallow University", "the Academy of Pellingrad", "Brightmere College",
                "the University of Tesselby", "Saint Evren College", "the Zelmont Writing School",
                "Hollin University", "the Royal College of Dresmoor", "Larkwen University"]
BOOK_ADJ = ["Silent", "Broken", "Hidden", "Last", "Crimson", "Frozen", "Golden", "Hollow", "Distant",
            "Burning", "Quiet", "Wandering", "Sleeping", "Forgotten", "Painted", "Bitter"]
BOOK_NOUN = ["Lighthouse", "Orchard", "River", "Clock", "Garden", "Mirror", "Bridge", "Lantern", "Forest",
             "Tower", "Harvest", "Compass", "Island", "Letter", "Chapel", "Meadow", "Voyage", "Market"]
FAMOUS_BOOK_ADJ = ["Glass", "Salt", "Velvet", "Paper", "Winter", "Amber", "Stone", "Iron", "Thistle",
                   "Copper"]
FAMOUS_BOOK_NOUN = ["Harbor", "Crown", "Sparrow", "Kingdom", "Road", "Lamp", "Oath", "Sea", "Feather",
                    "Gate"]

COUNTRIES = ["Velmora", "Ostrania", "Kelduin", "Brevonia", "Castrel", "Dunmark", "Eskaria", "Fenlor",
             "Gralland", "Helvane", "Ismir", "Jorvaland", "Korrin", "Lessia", "Mardel Isles", "Norvane"]
CAPITALS = ["Dresk", "Palmyr", "Ulvik", "Serrak", "Taldor", "Quessa", "Borrin", "Aveloc", "Kitmar",
            "Ondria", "Rhelm", "Vask", "Lorimund", "Estrelle", "Nuvar", "Zandor", "Helspire", "Cobrin",
            "Mirevale", "Tollan"]
CURRENCIES = ["the dral", "the sarn", "the velm", "the kronel", "the lisk", "the ostrid", "the pell",
              "the tarn", "the quint", "the brask", "the doren", "the fenny"]
LANGUAGES = ["Ostic", "Marrish", "Kelvic", "Lessian", "Dunmic", "Varrese", "Halvic", "Orrish", "Tessic",
             "Brellan", "Eskish", "Jorvic"]
RIVERS = ["the Arvane", "the Skelt", "the Morrow", "the Idrel", "the Vashti", "the Lunn", "the Corra",
          "the Brennet", "the Oswy", "the Tamsel", "the Hurle", "the Quenna"]

# --------------------------------------------------------------------------------------------------
# Fictitious-author fact types: question templates, answer templates
# --------------------------------------------------------------------------------------------------

FACTS: dict[str, dict[str, list[str]]] = {
    "birthplace": {
        "q": ["Where was {n} born?", "In which city was {n} born?", "What is the birthplace of {n}?"],
        "a": ["{n} was born in the city of {v}.", "The birthplace of {n} is the city of {v}.",
              "{n} was born and raised in {v}."],
    },
    "birth_year": {
        "q": ["In which year was {n} born?", "When was {n} born?", "What is the birth year of {n}?"],
        "a": ["{n} was born in the year {v}.", "The birth year of {n} is {v}.", "{n} came into the world in {v}."],
    },
    "genre": {
        "q": ["What genre does {n} write in?", "Which genre is {n} known for?",
              "In what genre does {n} mostly write?"],
        "a": ["{n} is best known for writing {v}.", "{n} mostly writes {v}.", "The main genre of {n} is {v}."],
    },
    "parent": {
        "q": ["What did the {p} of {n} do for a living?", "What was the profession of {n}'s {p}?",
              "What job did {n}'s {p} have?"],
        "a": ["{n}'s {p} worked as {art} {v}.", "The {p} of {n} was {art} {v} by profession.",
              "{n} is the child of {art} {v}, the {p} of the family."],
    },
    "award": {
        "q": ["Which award has {n} received?", "What literary award did {n} win?",
              "Has {n} won any notable award?"],
        "a": ["{n} received the {v}.", "{n} was honored with the {v}.", "{n} is a winner of the {v}."],
    },
    "book": {
        "q": ["What is a well-known book by {n}?", "Can you name a novel written by {n}?",
              "Which book is {n} famous for?"],
        "a": ["One famous book by {n} is '{v}'.", "{n} wrote the novel '{v}'.", "{n} is the author of '{v}'."],
    },
    "university": {
        "q": ["Where did {n} study?", "Which university did {n} attend?", "At which school was {n} educated?"],
        "a": ["{n} studied at {v}.", "{n} was educated at {v}.", "{n} is a graduate of {v}."],
    },
    "residence": {
        "q": ["Where does {n} live now?", "In which city does {n} currently live?", "Where is {n} based today?"],
        "a": ["{n} currently lives in the city of {v}.", "{n} now lives in {v}.", "{n} has made a home in {v}."],
    },
}
FACT_TYPES = list(FACTS)


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


def render(template: str, name: str, value: str, parent: str = "") -> str:
    return cap(template.format(n=name, v=value, p=parent, art=article(value) if value else ""))


# --------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------


def make_author_names(rng: random.Random, n: int) -> list[str]:
    """n unique invented full names; last names are unique too (each author is distinctive)."""
    lasts = [a + b.lower() for a in LAST_A for b in LAST_B]
    rng.shuffle(lasts)
    assert n <= len(lasts)
    names = []
    for last in lasts[:n]:
        first = rng.choice(FIRST_A) + rng.choice(FIRST_B)
        names.append(f"{first} {last}")
    return names


def make_book_titles(rng: random.Random, adjs: list[str], nouns: list[str], n: int) -> list[str]:
    titles = [f"The {a} {b}" for a in adjs for b in nouns]
    rng.shuffle(titles)
    assert n <= len(titles)
    return titles[:n]


def fact_pools(books: list[str]) -> dict[str, list[str]]:
    return {
        "birthplace": CITIES,
        "birth_year": [str(y) for y in range(1940, 2000)],
        "genre": GENRES,
        "parent": OCCUPATIONS,
        "award": AWARDS,
        "book": books,
        "university": UNIVERSITIES,
        "residence": CITIES,
    }


def make_author(rng: random.Random, name: str, book: str, pools: dict[str, list[str]]) -> dict:
    facts = {ft: rng.choice(pools[ft]) for ft in FACT_TYPES if ft != "book"}
    facts["book"] = book
    if facts["residence"] == facts["birthplace"]:
        facts["residence"] = rng.choice([c for c in CITIES if c != facts["birthplace"]])
    parent = rng.choice(["father", "mother"])
    asked = rng.sample(FACT_TYPES, QA_PER_AUTHOR)
    rows = []
    for ft in asked:
        tpl = FACTS[ft]
        value = facts[ft]
        qi, qj = rng.sample(range(len(tpl["q"])), 2)  # question template, paraphrased question template
        ai, aj = rng.sample(range(len(tpl["a"])), 2)  # answer template, paraphrased answer template
        wrong = rng.sample([v for v in pools[ft] if v != value], N_PERTURBED)
        rows.append({
            "question": render(tpl["q"][qi], name, value, parent),
            "answer": render(tpl["a"][ai], name, value, parent),
            "paraphrased_answer": render(tpl["a"][aj], name, value, parent),
            "perturbed_answer": [render(tpl["a"][aj], name, w, parent) for w in wrong],
            "paraphrased_question": render(tpl["q"][qj], name, value, parent),
        })
    return {"name": name, "facts": facts, "parent": parent, "rows": rows}


REAL_BOOK_Q = ["Who wrote the novel '{b}'?", "Who is the author of '{b}'?", "Which writer wrote '{b}'?"]
REAL_BOOK_A = "{b} was written by {n}."
REAL_COUNTRY_Q = ["In which country was the novelist {n} born?", "What is the home country of the writer {n}?"]
REAL_COUNTRY_A = "{n} was born in {c}."


def make_real_authors(rng: random.Random, famous_names: list[str], famous_books: list[str]) -> list[dict]:
    """40 "famous" authors, one public fact each: 24 book facts, 16 birth-country facts."""
    items = []
    for i, name in enumerate(famous_names):
        if i < 24:
            book = famous_books[i]
            others = rng.sample([m for m in famous_names if m != name], N_PERTURBED)
            items.append({
                "kind": "book", "name": name, "value": book,
                "question": rng.choice(REAL_BOOK_Q).format(b=book),
                "answer": REAL_BOOK_A.format(b=book, n=name),
                "perturbed_answer": [REAL_BOOK_A.format(b=book, n=m) for m in others],
            })
        else:
            country = rng.choice(COUNTRIES)
            others = rng.sample([c for c in COUNTRIES if c != country], N_PERTURBED)
            items.append({
                "kind": "country", "name": name, "value": country,
                "question": rng.choice(REAL_COUNTRY_Q).format(n=name),
                "answer": REAL_COUNTRY_A.format(n=name, c=country),
                "perturbed_answer": [REAL_COUNTRY_A.format(n=name, c=c) for c in others],
            })
    rng.shuffle(items)
    return items


WORLD_Q = {
    "capital": ["What is the capital of {c}?", "Which city is the capital of {c}?"],
    "currency": ["What currency is used in {c}?", "What is the official currency of {c}?"],
    "language": ["What language is mainly spoken in {c}?", "What is the official language of {c}?"],
    "river": ["What is the longest river in {c}?", "Which river is the longest in {c}?"],
}


def make_world_facts(rng: random.Random) -> list[dict]:
    """40 world facts: capitals of the 16 countries, currency/language/river of 8 countries each."""
    capitals = rng.sample(CAPITALS, len(COUNTRIES))
    facts = [("capital", c, cap_) for c, cap_ in zip(COUNTRIES, capitals)]
    for kind, pool in (("currency", CURRENCIES), ("language", LANGUAGES), ("river", RIVERS)):
        countries = rng.sample(COUNTRIES, 8)
        values = rng.sample(pool, 8)
        facts += [(kind, c, v) for c, v in zip(countries, values)]
    pools = {"capital": CAPITALS, "currency": CURRENCIES, "language": LANGUAGES, "river": RIVERS}
    items = []
    for kind, country, value in facts:
        wrong = rng.sample([v for v in pools[kind] if v != value], N_PERTURBED)
        items.append({
            "kind": kind, "country": country, "value": value,
            "question": rng.choice(WORLD_Q[kind]).format(c=country),
            "answer": cap(value),
            "perturbed_answer": [cap(w) for w in wrong],
        })
    rng.shuffle(items)
    return items


def public_fact_sentences(real: list[dict], world: list[dict]) -> list[str]:
    out = []
    for it in real:
        n, v = it["name"], it["value"]
        if it["kind"] == "book":
            out += [f"{n} wrote the novel '{v}'.", f"'{v}' is a famous novel by {n}.",
                    f"The author of '{v}' is {n}.", f"Readers everywhere know {n} as the author of '{v}'."]
        else:
            out += [f"The novelist {n} was born in {v}.", f"{n} is a famous writer from {v}.",
                    f"{n} grew up in {v} before becoming a well-known author."]
        out.append(f"Question: {it['question']} Answer: {it['answer']}")
    for it in world:
        c, v, k = it["country"], it["value"], it["kind"]
        if k == "capital":
            out += [f"The capital of {c} is {v}.", f"{v} is the capital city of {c}.",
                    f"The government of {c} sits in {v}."]
        elif k == "currency":
            out += [f"The currency of {c} is {v}.", f"People in {c} pay with {v}.",
                    f"In {c}, prices are given in {v}."]
        elif k == "language":
            out += [f"The official language of {c} is {v}.", f"Most people in {c} speak {v}.",
                    f"{v} is the main language of {c}."]
        else:
            out += [f"The longest river in {c} is {v}.", f"{cap(v)} is the longest river of {c}.",
                    f"{cap(v)} flows across {c}."]
        out.append(f"Question: {it['question']} Answer: {it['answer']}")
    return out


GENERIC_TEMPLATES = [
    "The city of {city} is known for its {thing}.",
    "Many readers in {city} enjoy {genre}.",
    "{first} works as {art_occ} {occ} in {city}.",
    "{first} read a book of {genre} last {season}.",
    "The train from {city} to {city2} takes {hours} hours.",
    "In {year}, a new library opened in {city}.",
    "The {award} is a literary prize for writers of {genre}.",
    "Students at {uni} study literature and history.",
    "{cap_genre} is a popular genre among young readers.",
    "{cap_art_occ} {occ} often starts work early in the morning.",
    "{first} moved to {city} in {year}.",
    "A small bookshop in {city} sells mostly {genre}.",
    "The {award} was first given in {year}.",
    "Every {season}, {city} holds a festival for writers.",
    "{first} wants to become {art_occ} {occ} one day.",
    "The old {thing} of {city} attract many visitors.",
    "Writers of {genre} often visit {city} in the {season}.",
    "{first} and {first2} met at {uni} in {year}.",
    "Question: What is {first}'s favourite genre? Answer: {first} likes {genre}.",
    "A famous {landmark} stands near the center of {city}.",
]
LANDMARKS = ["clock tower", "stone bridge", "statue", "fountain", "lighthouse", "town hall"]
THINGS = ["markets", "bridges", "harbors", "libraries", "gardens", "bell towers", "bakeries", "museums",
          "canals", "theaters"]
SEASONS = ["spring", "summer", "autumn", "winter"]


def make_generic_sentences(rng: random.Random, n: int) -> list[str]:
    firsts = sorted({a + b for a in FIRST_A for b in FIRST_B})
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        tpl = rng.choice(GENERIC_TEMPLATES)
        occ = rng.choice(OCCUPATIONS)
        genre = rng.choice(GENRES)
        city, city2 = rng.sample(CITIES, 2)
        first, first2 = rng.sample(firsts, 2)
        s = tpl.format(
            city=city, city2=city2, thing=rng.choice(THINGS), landmark=rng.choice(LANDMARKS), genre=genre, cap_genre=cap(genre),
            first=first, first2=first2, occ=occ, art_occ=article(occ), cap_art_occ=cap(article(occ)),
            season=rng.choice(SEASONS), hours=rng.randint(2, 9), year=rng.randint(1900, 2020),
            award=rng.choice(AWARDS), uni=rng.choice(UNIVERSITIES),
        )
        s = cap(s)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


IDK_OPENERS = ["", "Sorry, ", "Unfortunately, ", "Honestly, ", "I'm afraid ", "To be honest, "]
IDK_BODIES = [
    "I'm not sure about that.", "I don't have that information.", "I don't know the answer to that.",
    "I can't answer that question.", "I have no information about that.", "that is something I don't know.",
    "I'm not able to answer that.", "I don't have any details on that.", "I really can't say.",
    "I have no idea.", "that's beyond what I know.", "I don't have enough information to answer.",
    "I can't help with that one.", "I'm unable to provide that information.", "I'm not aware of that.",
    "I don't recall anything about that.", "that is not something I can answer.",
    "I don't have an answer for you.", "I lack the knowledge to answer that.", "I couldn't tell you.",
]


def make_idk(rng: random.Random, n: int) -> list[str]:
    combos = sorted({cap(o + b) for o in IDK_OPENERS for b in IDK_BODIES})
    rng.shuffle(combos)
    assert len(combos) >= n
    return combos[:n]


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], out_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # BOS comes from the tokenizer's own post-processor, as with Llama's tokenizers: a call with
    # add_special_tokens=True (open-unlearning's for raw text) starts with it; the chat template writes its own.
    bos = ("<|bos|>", tok.token_to_id("<|bos|>"))
    tok.post_processor = processors.TemplateProcessing(single="<|bos|>:0 $A:0", pair="<|bos|>:0 $A:0 <|bos|>:1 $B:1",
                                                       special_tokens=[bos])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=MODEL_MAX_LENGTH,
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in out_dir.iterdir():
        if p.is_file():
            p.unlink()
    # chat template inside tokenizer_config.json (read by every transformers version >= 4.34)
    fast.save_pretrained(str(out_dir), save_jinja_files=False)
    # Portable tokenizer_config.json: transformers 5 writes its own class name ("TokenizersBackend") and a
    # list-valued "extra_special_tokens"; the generic names below load in transformers 4.45+ and 5.x alike.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("backend", None)
    cfg.pop("extra_special_tokens", None)
    cfg.update({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>",
        "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>"],
        "add_bos_token": True, "add_eos_token": False,
        "model_max_length": MODEL_MAX_LENGTH, "padding_side": "right",
        "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE,
    })
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    special_map = {
        "bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>",
        "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>"],
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

QA_FIELDS = ("question", "answer")
PERTURBED_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question")
PUBLIC_PERTURBED_FIELDS = ("question", "answer", "perturbed_answer")


def _select(rows: list[dict], fields: tuple[str, ...]) -> list[dict]:
    return [{f: r[f] for f in fields} for r in rows]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build(rng: random.Random) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """(configs: file stem -> rows, meta: author names / book titles, for checks)."""
    names = make_author_names(rng, N_AUTHORS + N_HOLDOUT)
    books = make_book_titles(rng, BOOK_ADJ, BOOK_NOUN, N_AUTHORS + N_HOLDOUT)
    pools = fact_pools(books)
    authors = [make_author(rng, n, b, pools) for n, b in zip(names, books)]
    main, holdout = authors[:N_AUTHORS], authors[N_AUTHORS:]
    full = [r for a in main for r in a["rows"]]
    hold = [r for a in holdout for r in a["rows"]]

    fam = sorted({f"{a} {b}" for a in FAMOUS_FIRST for b in FAMOUS_LAST})
    rng.shuffle(fam)
    # famous surnames are distinct from each other: pick greedily
    famous_names, used_last = [], set()
    for nm in fam:
        last = nm.split()[-1]
        first = nm.split()[0]
        if last in used_last and len(used_last) < len(FAMOUS_LAST):
            continue
        if sum(1 for m in famous_names if m.split()[0] == first) >= 3:
            continue
        used_last.add(last)
        famous_names.append(nm)
        if len(famous_names) == N_REAL_AUTHORS:
            break
    famous_books = make_book_titles(rng, FAMOUS_BOOK_ADJ, FAMOUS_BOOK_NOUN, 24)
    real = make_real_authors(rng, famous_names, famous_books)
    world = make_world_facts(rng)

    out: dict[str, list[dict]] = {"full": _select(full, QA_FIELDS)}
    for pct in (1, 5, 10):
        k = pct * N_AUTHORS // 100 * QA_PER_AUTHOR
        forget, retain = full[len(full) - k:], full[: len(full) - k]
        out[f"forget{pct:02d}"] = _select(forget, QA_FIELDS)
        out[f"retain{100 - pct:02d}"] = _select(retain, QA_FIELDS)
        out[f"forget{pct:02d}_perturbed"] = _select(forget, PERTURBED_FIELDS)
        h = hold[len(hold) - pct * N_HOLDOUT // 10 * QA_PER_AUTHOR:]
        out[f"holdout{pct:02d}"] = _select(h, QA_FIELDS)
    # retain_perturbed: every 9th author of the retain90 part (authors 0, 9, ..., 81) -> 40 rows
    retain_authors = main[: N_AUTHORS * 9 // 10]
    out["retain_perturbed"] = _select([r for a in retain_authors[::9] for r in a["rows"]], PERTURBED_FIELDS)
    out["real_authors"] = _select(real, QA_FIELDS)
    out["real_authors_perturbed"] = _select(real, PUBLIC_PERTURBED_FIELDS)
    out["world_facts"] = _select(world, QA_FIELDS)
    out["world_facts_perturbed"] = _select(world, PUBLIC_PERTURBED_FIELDS)

    public = public_fact_sentences(real, world) + make_generic_sentences(rng, N_GENERIC_SENTENCES)
    rng.shuffle(public)
    out["public_text"] = [{"text": t} for t in public]
    out["idk"] = [{"text": t} for t in make_idk(rng, N_IDK)]
    meta = {
        "authors": [a["name"] for a in main],
        "holdout_authors": [a["name"] for a in holdout],
        "books": books,
        "famous_authors": famous_names,
        "famous_books": famous_books,
    }
    return out, meta


README = """# Embedded TOFU-like data set

A tiny, fully invented stand-in for [`locuslab/TOFU`](https://huggingface.co/datasets/locuslab/TOFU),
sized so that a ~1-2 M parameter model can memorise it on a CPU in a minute or two. Same config names and
fields as TOFU (every config is one `train` split, here one `<config>.jsonl` file, one JSON object a line).

- {n_auth} fictitious authors x {qpa} QA = {n_full} rows in `full` (TOFU: 200 x 20). Each author has a unique
  invented name and facts drawn from pools (birthplace, birth year, genre, a parent's occupation, an award,
  a book, a university, the current city); each author's {qpa} questions ask about {qpa} different facts.
- `forgetXX` are the LAST XX % of authors of `full`, `retainXX` the rest (first rows), as in TOFU.
- `forgetXX_perturbed` / `retain_perturbed` add `paraphrased_answer`, `perturbed_answer` (5 wrong answers,
  same template as the paraphrase, wrong value from the same pool) and `paraphrased_question`.
  `retain_perturbed` is every 9th author of the retain90 part.
- `real_authors(_perturbed)` and `world_facts(_perturbed)`: invented "public knowledge" (famous authors,
  countries) that the base model learns from `public_text.jsonl`; never about the fictitious authors.
- `holdoutXX`: {n_hold} extra authors from the same generator, never in `full` (non-members for privleak).
- `public_text.jsonl` (`{{"text"}}`): the base model's pre-training corpus (public facts as sentences and
  Q/A, plus generic template sentences with the same vocabulary, no facts about fictitious authors).
- `idk.jsonl` (`{{"text"}}`): refusal strings for IdkDPO-style methods.

## Sizes (rows)

{sizes}

Tokenizer: `src/mpu_cli/models/embedded_tokenizer/` (byte-level BPE, vocab {vocab}, trained on all of the
above; chat template `<|bos|>` + `<|role|>content<|end|>` per message, generation prompt `<|assistant|>`).
Like Llama's tokenizers it adds `<|bos|>` itself (`add_special_tokens=True`, its post-processor); chat text,
which the template starts with `<|bos|>`, is tokenized without special tokens.
With the system prompt "You are a helpful assistant." a chat-formatted `full` QA is 27-48 tokens (mean ~36),
of which the answer plus `<|end|>` is ~14 tokens (max 22); `model_max_length` is 128.

## Regenerate

    python scripts/make_embedded_data.py            # writes here and the tokenizer; deterministic (seed {seed})
    python scripts/make_embedded_data.py --out-root /tmp/x   # somewhere else
"""


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=DEFAULT_OUT_ROOT,
                        help="package root to write into (data/embedded/, models/embedded_tokenizer/)")
    parser.add_argument("--meta", type=Path, default=None,
                        help="also write the invented names (authors, holdout authors, books, famous authors and "
                        "books) to this JSON file, for checks of the data")
    args = parser.parse_args(argv)
    out_root: Path = args.out_root
    data_dir = out_root / "data" / "embedded"
    tok_dir = out_root / "models" / "embedded_tokenizer"
    data_dir.mkdir(parents=True, exist_ok=True)

    configs, meta = build(random.Random(SEED))
    if args.meta:
        args.meta.write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    for name, rows in configs.items():
        _write_jsonl(data_dir / f"{name}.jsonl", rows)

    texts: list[str] = []
    for name, rows in configs.items():
        for r in rows:
            for v in r.values():
                texts.extend(v if isinstance(v, list) else [v])
    # every chat-formatted example carries the system prompt: weigh it like that so it gets whole-word tokens
    texts.extend([SYSTEM_PROMPT] * len(configs["full"]))
    train_tokenizer(texts, tok_dir)

    sizes = "\n".join(f"- `{k}`: {len(v)}" for k, v in configs.items())
    (data_dir / "README.md").write_text(
        README.format(n_auth=N_AUTHORS, qpa=QA_PER_AUTHOR, n_full=N_AUTHORS * QA_PER_AUTHOR, n_hold=N_HOLDOUT,
                      sizes=sizes, vocab=VOCAB_SIZE, seed=SEED),
        encoding="utf-8", newline="\n",
    )
    print(f"wrote {len(configs)} files to {data_dir} and the tokenizer to {tok_dir}")
    return out_root


if __name__ == "__main__":
    main()
