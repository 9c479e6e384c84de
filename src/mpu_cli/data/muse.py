"""Loading MUSE-shaped data (Shi et al., 2024): the embedded MUSE-shaped corpus, a local folder laid out like
``muse-bench/MUSE-News`` / ``MUSE-Books``, or such a Hub dataset.

MUSE unlearns raw text: its data come as configs, each with named splits (the layout of muse-bench's Hub
datasets, which `LAYOUT` lists with the fields of their rows):

- ``raw``: the corpora, ``{"text"}`` documents — forget, retain1, retain2, holdout;
- ``knowmem``: questions about the corpora, ``{"question", "answer"}`` — forget_qa, retain_qa, and the
  few-shot examples forget_qa_icl, retain_qa_icl;
- ``verbmem``: ``{"prompt", "gt"}`` — a forget document's opening and its true continuation;
- ``privleak``: ``{"text"}`` documents for the membership attack — forget, retain, holdout.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from mpu_cli.data.tofu import EMBEDDED, _read_json_rows, _read_parquet_rows, _resolve_local
from mpu_cli.data.validate import DataError, validate_rows

LAYOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "raw": {"forget": ("text",), "retain1": ("text",), "retain2": ("text",), "holdout": ("text",)},
    "knowmem": {s: ("question", "answer") for s in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")},
    "verbmem": {"forget": ("prompt", "gt")},
    "privleak": {"forget": ("text",), "retain": ("text",), "holdout": ("text",)},
}
FORGET_SPLITS = ("forget",)
RETAIN_SPLITS = ("retain1", "retain2")
# Hub names of the paper's two MUSE corpora (local folders in their layout work the same way)
HUB_DATASETS = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")


def embedded_dir() -> Path:
    """Folder of the shipped MUSE-shaped corpus (made by scripts/make_muse_corpus.py)."""
    return Path(str(resources.files("mpu_cli.data").joinpath("embedded_muse")))


def _check(config: str, split: str) -> tuple[str, ...]:
    if config not in LAYOUT:
        raise ValueError(f"unknown MUSE config {config!r}; accepted: {', '.join(LAYOUT)}")
    if split not in LAYOUT[config]:
        raise ValueError(f"unknown split {split!r} of MUSE config {config!r}; accepted: {', '.join(LAYOUT[config])}")
    return LAYOUT[config][split]


def _local_rows(folder: Path, config: str, split: str) -> list[dict] | None:
    """Rows of one split from a folder in muse-bench's layout: ``<config>/<split>.jsonl`` (or ``.json``), the
    Hub's ``<config>/<split>-*.parquet`` shards, or ``<config>/<split>/*.parquet``; None when there is none."""
    sub = folder / config
    for ext in (".jsonl", ".json"):
        f = sub / f"{split}{ext}"
        if f.is_file():
            return _read_json_rows(f)
    shards = sorted(sub.glob(f"{split}-*.parquet")) or sorted((sub / split).glob("*.parquet"))
    return _read_parquet_rows(shards) if shards else None


def load_muse(source: str, config: str, split: str) -> list[dict]:
    """Rows of one MUSE split, each with the fields `LAYOUT` names as non-empty strings (DataError otherwise).

    ``source``: ``"embedded"`` (the shipped corpus), a local folder in muse-bench's layout, or a Hub dataset
    name, loaded with ``datasets.load_dataset(source, config, split=split)``.
    """
    fields = _check(config, split)
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(source, str) or not source:
        raise DataError(f"data source must be {EMBEDDED!r}, a local folder or a Hub dataset name, got {source!r}")
    name = f"{config}/{split}"
    folder = embedded_dir() if source == EMBEDDED else _resolve_local(
        source, "muse-bench/MUSE-News", " (raw/, knowmem/, verbmem/, privleak/)", f"({', '.join(HUB_DATASETS)})")
    if folder is not None:
        rows = _local_rows(folder, config, split)
        if rows is None:
            where = "the embedded MUSE corpus" if source == EMBEDDED else f"data folder {str(folder)!r}"
            raise DataError(f"MUSE split {name!r} not found in {where}: looked for {name}.jsonl, {name}.json, "
                            f"{name}-*.parquet and {name}/*.parquet")
        return validate_rows(name, rows, "embedded MUSE data" if source == EMBEDDED else str(folder), (fields, ()))
    try:
        import datasets

        ds = datasets.load_dataset(source, config, split=split)
    except Exception as e:  # any failure to fetch is a bad-input error for the caller
        raise DataError(f"could not load Hub dataset {source!r} (config {config!r}, split {split!r}): "
                        f"{type(e).__name__}: {e}".splitlines()[0] + " (and no local folder of that name exists)"
                        ) from e
    return validate_rows(name, [dict(r) for r in ds], source, (fields, ()))


def texts(rows: list[dict]) -> list[str]:
    return [r["text"] for r in rows]


def eval_sets(source: str, split: str = "forget") -> dict[str, list[dict]]:
    """What the MUSE evaluation reads: knowmem QA with their few-shot examples, verbmem, privleak."""
    if split not in FORGET_SPLITS:
        raise ValueError(f"unknown MUSE forget split {split!r}; accepted: {', '.join(FORGET_SPLITS)}")
    return {
        "forget_qa": load_muse(source, "knowmem", "forget_qa"),
        "forget_qa_icl": load_muse(source, "knowmem", "forget_qa_icl"),
        "retain_qa": load_muse(source, "knowmem", "retain_qa"),
        "retain_qa_icl": load_muse(source, "knowmem", "retain_qa_icl"),
        "verbmem": load_muse(source, "verbmem", "forget"),
        "privleak_forget": load_muse(source, "privleak", "forget"),
        "privleak_holdout": load_muse(source, "privleak", "holdout"),
    }


def training_corpora(source: str, forget_split: str = "forget") -> dict[str, list[str]]:
    """The documents the prepare stage fine-tunes on: the target on forget + retain, the retrained model on
    retain only (retain = retain1 + retain2, the documents the target saw besides the forget set); and the
    forget documents alone (the target's stop criterion)."""
    forget = texts(load_muse(source, "raw", forget_split))
    retain = texts(load_muse(source, "raw", "retain1")) + texts(load_muse(source, "raw", "retain2"))
    return {"target": forget + retain, "retain": retain, "forget": forget}
