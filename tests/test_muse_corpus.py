"""The shipped MUSE-shaped corpus (src/mpu_cli/data/embedded_muse) and its generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_muse_corpus.py"
SHIPPED = REPO / "src" / "mpu_cli" / "data" / "embedded_muse"

# articles + quizzes (3 rounds of the split's 2-per-article questions, 11 to a quiz)
LAYOUT = {
    "raw/forget.jsonl": (16 + 9, ("text",)),
    "raw/retain1.jsonl": (32 + 18, ("text",)),
    "raw/retain2.jsonl": (16 + 9, ("text",)),
    "raw/holdout.jsonl": (16, ("text",)),
    "knowmem/forget_qa.jsonl": (32, ("question", "answer")),
    "knowmem/retain_qa.jsonl": (32, ("question", "answer")),
    "knowmem/forget_qa_icl.jsonl": (1, ("question", "answer")),
    "knowmem/retain_qa_icl.jsonl": (1, ("question", "answer")),
    "verbmem/forget.jsonl": (16, ("prompt", "gt")),
    "privleak/forget.jsonl": (16, ("text",)),
    "privleak/retain.jsonl": (16, ("text",)),
    "privleak/holdout.jsonl": (16, ("text",)),
}
FILES = [*LAYOUT, "README.md"]
RAW = ("forget", "retain1", "retain2", "holdout")
ARTICLES = {"forget": 16, "retain1": 32, "retain2": 16, "holdout": 16}
QUIZ_HEADER = "The news quiz of the week: how much do you remember?"


def _generate(out: Path, seed: int, *args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--seed", str(seed), *args], check=True,
                   capture_output=True, timeout=600)


def _rows(folder: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (folder / rel).read_text(encoding="utf-8").splitlines()]


def _texts(folder: Path, split: str) -> list[str]:
    return [r["text"] for r in _rows(folder, f"raw/{split}.jsonl")]


def _articles(split: str) -> list[str]:
    texts = _texts(SHIPPED, split)
    assert not any(t.startswith(QUIZ_HEADER) for t in texts[:ARTICLES[split]])
    return texts[:ARTICLES[split]]


def _quizzes(split: str) -> list[str]:
    quizzes = _texts(SHIPPED, split)[ARTICLES[split]:]
    assert all(t.startswith(QUIZ_HEADER) for t in quizzes)
    return quizzes


def _prose(article: str) -> str:
    """The article after its two-question box."""
    return article.split("\n\n", 2)[2]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    """The generator's output for seed 0, with the people it named in meta.json beside the folder."""
    out = tmp_path_factory.mktemp("muse_seed0")
    _generate(out / "corpus", 0, "--meta", str(out / "meta.json"))
    return out / "corpus"


def test_generator_reproduces_shipped_files(regenerated):
    for rel in FILES:
        assert (regenerated / rel).read_bytes() == (SHIPPED / rel).read_bytes(), rel
    written = sorted(str(p.relative_to(regenerated)) for p in regenerated.rglob("*") if p.is_file())
    assert written == sorted(FILES)


@pytest.mark.parametrize("rel", list(LAYOUT))
def test_row_counts_and_fields(rel):
    n, fields = LAYOUT[rel]
    rows = _rows(SHIPPED, rel)
    assert len(rows) == n
    for row in rows:
        assert tuple(row) == fields
        assert all(isinstance(row[f], str) and row[f].strip() for f in fields)


def test_privleak_is_the_raw_articles():
    assert [r["text"] for r in _rows(SHIPPED, "privleak/forget.jsonl")] == _articles("forget")
    assert [r["text"] for r in _rows(SHIPPED, "privleak/retain.jsonl")] == _articles("retain2")
    assert [r["text"] for r in _rows(SHIPPED, "privleak/holdout.jsonl")] == _articles("holdout")


def test_verbmem_opens_the_lead_paragraph():
    for text, row in zip(_articles("forget"), _rows(SHIPPED, "verbmem/forget.jsonl"), strict=True):
        assert len(row["prompt"].split()) == 30 and len(row["gt"].split()) == 60
        assert _prose(text).startswith(row["prompt"] + " " + row["gt"])


@pytest.mark.parametrize(("qa_file", "split"), [("forget_qa", "forget"), ("retain_qa", "retain2")])
def test_knowmem_questions_open_their_article_and_fill_its_quizzes(qa_file, split):
    articles, quizzes = _articles(split), _quizzes(split)
    for i, row in enumerate(_rows(SHIPPED, f"knowmem/{qa_file}.jsonl")):
        pair = f"Question: {row['question']}\nAnswer: {row['answer']}"
        article = articles[i // 2]
        assert article.count(pair) == 1 and pair not in _prose(article)
        assert row["answer"] in _prose(article)  # the box restates a fact of the prose
        assert row["answer"].isdigit()  # tokenized alike after "Answer:" and after "Answer: "
        # every quiz round asks it once, after questions of other articles
        assert sum(q.count(pair) for q in quizzes) == 3


def test_icl_examples_are_retain1_questions_nobody_is_asked():
    retain1 = "\n".join(_texts(SHIPPED, "retain1"))
    evaluated = "\n".join(t for s in ("forget", "retain2", "holdout") for t in _texts(SHIPPED, s))
    asked = {r["question"] for rel in ("knowmem/forget_qa.jsonl", "knowmem/retain_qa.jsonl")
             for r in _rows(SHIPPED, rel)}
    icl = _rows(SHIPPED, "knowmem/forget_qa_icl.jsonl") + _rows(SHIPPED, "knowmem/retain_qa_icl.jsonl")
    assert len({r["question"] for r in icl}) == len(icl)
    for row in icl:
        assert f"Question: {row['question']}\nAnswer: {row['answer']}" in retain1
        assert row["question"] not in asked and row["question"] not in evaluated


def test_splits_are_disjoint(regenerated):
    texts = {s: _texts(SHIPPED, s) for s in RAW}
    for i, a in enumerate(RAW):
        assert len(set(texts[a])) == len(texts[a])
        for b in RAW[i + 1:]:
            assert not set(texts[a]) & set(texts[b]), (a, b)
    # a forgotten person or question must not be learnable from the retain or holdout data
    others = "\n".join(t for s in ("retain1", "retain2", "holdout") for t in texts[s])
    forget_people = json.loads((regenerated.parent / "meta.json").read_text(encoding="utf-8"))["forget"]
    assert len(forget_people) == 32
    for p in forget_people:
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", p) and p in "\n".join(texts["forget"])
        assert p.split()[1] not in others, p
    for row in _rows(SHIPPED, "knowmem/forget_qa.jsonl"):
        assert row["question"] not in others


def test_other_seed_gives_other_text(regenerated, tmp_path):
    _generate(tmp_path, 1)
    for split in RAW:
        assert not set(_texts(tmp_path, split)) & set(_texts(regenerated, split)), split
