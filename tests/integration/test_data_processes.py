"""The embedded TOFU-like data set, its tokenizer, the loader and the generator."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpu_cli.data import tofu
from mpu_cli.data.tofu import load_public_text

REPO = Path(__file__).resolve().parents[2]


SCRIPT = REPO / "scripts" / "make_embedded_data.py"


def _generate(out_root: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out-root", str(out_root), *args], check=True,
                   capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """One run of the generator (a package root), with the names it invented in meta.json beside it."""
    root = tmp_path_factory.mktemp("generated")
    _generate(root / "a", "--meta", str(root / "meta.json"))
    return root


@pytest.fixture(scope="module")
def meta(generated):
    return json.loads((generated / "meta.json").read_text(encoding="utf-8"))


def test_authors_and_answers(data, meta):
    authors, holdout = meta["authors"], meta["holdout_authors"]
    assert len(set(authors + holdout + meta["famous_authors"])) == 100 + 10 + 40
    full = data["full"]
    for i, r in enumerate(full):  # 4 QA per author, in author order, each mentioning the full name
        assert authors[i // 4] in r["question"] and authors[i // 4] in r["answer"]
        assert len(r["answer"].split()) <= 16, r["answer"]
    assert len({r["question"] for r in full}) == len(full)
    full_text = json.dumps(full)
    assert not any(h in full_text for h in holdout)
    for i, r in enumerate(data["holdout10"]):
        assert holdout[i // 4] in r["question"]


def test_public_data_has_no_fictitious_facts(data, meta):
    private = meta["authors"] + meta["holdout_authors"] + meta["books"]
    public = load_public_text()
    assert len(public) >= 500 and len(set(public)) == len(public)
    blob = "\n".join(public) + json.dumps(data["real_authors_perturbed"] + data["world_facts_perturbed"])
    assert not [p for p in private if p in blob]
    # the public facts are in the public corpus
    for r in data["real_authors"] + data["world_facts"]:
        assert f"Question: {r['question']} Answer: {r['answer']}" in public


def test_generator_deterministic_and_shipped_files_current(tmp_path, generated):
    a, b = generated / "a", tmp_path / "b"
    _generate(b)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 20
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # the committed files are what the generator writes
    shipped = Path(tofu.__file__).resolve().parents[1]
    for rel in files_a:
        assert (shipped / rel).read_bytes() == (a / rel).read_bytes(), f"{rel} is stale: rerun {SCRIPT}"

