"""The shipped MUSE-shaped corpus (src/mpu_cli/data/embedded_muse) and its generator."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MUSE_LAYOUT, SHIPPED_MUSE, muse_rows, muse_texts

REPO = Path(__file__).resolve().parents[2]


SCRIPT = REPO / "scripts" / "make_muse_corpus.py"


FILES = [*MUSE_LAYOUT, "README.md"]


RAW = ("forget", "retain1", "retain2", "holdout")


def _generate(out: Path, seed: int, *args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--seed", str(seed), *args], check=True,
                   capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    """The generator's output for seed 0, with the people it named in meta.json beside the folder."""
    out = tmp_path_factory.mktemp("muse_seed0")
    _generate(out / "corpus", 0, "--meta", str(out / "meta.json"))
    return out / "corpus"


def test_generator_reproduces_shipped_files(regenerated):
    for rel in FILES:
        assert (regenerated / rel).read_bytes() == (SHIPPED_MUSE / rel).read_bytes(), rel
    written = sorted(str(p.relative_to(regenerated)) for p in regenerated.rglob("*") if p.is_file())
    assert written == sorted(FILES)


def test_splits_are_disjoint(regenerated):
    texts = {s: muse_texts(SHIPPED_MUSE, s) for s in RAW}
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
    for row in muse_rows(SHIPPED_MUSE, "knowmem/forget_qa.jsonl"):
        assert row["question"] not in others


def test_other_seed_gives_other_text(regenerated, tmp_path):
    _generate(tmp_path, 1)
    for split in RAW:
        assert not set(muse_texts(tmp_path, split)) & set(muse_texts(regenerated, split)), split

