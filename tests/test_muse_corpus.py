"""The shipped MUSE-shaped corpus (src/mpu_cli/data/embedded_muse) and its generator."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_muse_corpus.py"
SHIPPED = REPO / "src" / "mpu_cli" / "data" / "embedded_muse"

LAYOUT = {
    "raw/forget.jsonl": (16, ("text",)),
    "raw/retain1.jsonl": (32, ("text",)),
    "raw/retain2.jsonl": (16, ("text",)),
    "raw/holdout.jsonl": (16, ("text",)),
    "knowmem/forget_qa.jsonl": (32, ("question", "answer")),
    "knowmem/retain_qa.jsonl": (32, ("question", "answer")),
    "knowmem/forget_qa_icl.jsonl": (3, ("question", "answer")),
    "knowmem/retain_qa_icl.jsonl": (3, ("question", "answer")),
    "verbmem/forget.jsonl": (16, ("prompt", "gt")),
    "privleak/forget.jsonl": (16, ("text",)),
    "privleak/retain.jsonl": (16, ("text",)),
    "privleak/holdout.jsonl": (16, ("text",)),
}
FILES = [*LAYOUT, "README.md"]
RAW = ("forget", "retain1", "retain2", "holdout")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_muse_corpus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(folder: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (folder / rel).read_text(encoding="utf-8").splitlines()]


def _texts(folder: Path, split: str) -> list[str]:
    return [r["text"] for r in _rows(folder, f"raw/{split}.jsonl")]


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def regenerated(script, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("muse_seed0")
    assert script.main(["--out", str(out), "--seed", "0"]) == 0
    return out


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


def test_privleak_is_raw():
    assert _rows(SHIPPED, "privleak/forget.jsonl") == _rows(SHIPPED, "raw/forget.jsonl")
    assert _rows(SHIPPED, "privleak/retain.jsonl") == _rows(SHIPPED, "raw/retain2.jsonl")
    assert _rows(SHIPPED, "privleak/holdout.jsonl") == _rows(SHIPPED, "raw/holdout.jsonl")


def test_verbmem_is_a_prefix_of_its_article():
    forget = _texts(SHIPPED, "forget")
    for text, row in zip(forget, _rows(SHIPPED, "verbmem/forget.jsonl"), strict=True):
        assert len(row["prompt"].split()) == 30 and len(row["gt"].split()) == 60
        assert text.startswith(row["prompt"] + " " + row["gt"])


def test_knowmem_answers_come_from_their_articles():
    forget = _texts(SHIPPED, "forget")
    qa = _rows(SHIPPED, "knowmem/forget_qa.jsonl")
    for i, row in enumerate(qa):
        text = forget[i // 2]
        prose = text.split("\n\nQuestion: ")[0]
        assert row["answer"] in prose
        assert text.count(f"Question: {row['question']}\nAnswer: {row['answer']}") == 1
        assert 1 <= len(row["answer"].split()) <= 4
    retain2 = _texts(SHIPPED, "retain2")
    for i, row in enumerate(_rows(SHIPPED, "knowmem/retain_qa.jsonl")):
        assert f"Question: {row['question']}\nAnswer: {row['answer']}" in retain2[i // 2]


def test_icl_examples_are_about_no_shipped_article():
    everything = "\n".join(t for s in RAW for t in _texts(SHIPPED, s))
    other_qa = {json.dumps(r) for rel in ("knowmem/forget_qa.jsonl", "knowmem/retain_qa.jsonl")
                for r in _rows(SHIPPED, rel)}
    icl = _rows(SHIPPED, "knowmem/forget_qa_icl.jsonl") + _rows(SHIPPED, "knowmem/retain_qa_icl.jsonl")
    assert len({r["question"] for r in icl}) == len(icl)
    for row in icl:
        assert json.dumps(row) not in other_qa
        assert row["question"] not in everything


def test_splits_are_disjoint():
    texts = {s: _texts(SHIPPED, s) for s in RAW}
    for i, a in enumerate(RAW):
        assert len(set(texts[a])) == len(texts[a])
        for b in RAW[i + 1:]:
            assert not set(texts[a]) & set(texts[b]), (a, b)
    # a forgotten person must not be learnable from the retain or holdout data
    people = [r["answer"] for r in _rows(SHIPPED, "knowmem/forget_qa.jsonl")
              if r["question"].startswith(("Who ", "Which singer", "Which judge"))]
    assert people and all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", p) for p in people)
    others = "\n".join(t for s in ("retain1", "retain2", "holdout") for t in texts[s])
    for p in people:
        assert p not in others, p
        assert p.split()[1] not in others, p


def test_other_seed_gives_other_text(script, regenerated, tmp_path):
    assert script.main(["--out", str(tmp_path), "--seed", "1"]) == 0
    for split in RAW:
        assert not set(_texts(tmp_path, split)) & set(_texts(regenerated, split)), split
