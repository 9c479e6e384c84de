"""Loading TOFU-shaped data: the embedded data set, a local folder laid out like ``locuslab/TOFU``, or a Hub name.

Every config is a list of dicts with TOFU's fields (``question``, ``answer`` and, for the ``*_perturbed``
configs, ``paraphrased_answer``, ``perturbed_answer`` (list), ``paraphrased_question``).
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

from mpu_cli.data.validate import DataError, validate_rows

EMBEDDED = "embedded"

FORGET_SPLITS: tuple[str, ...] = ("forget01", "forget05", "forget10")

TOFU_CONFIGS: tuple[str, ...] = (
    "full",
    "forget01", "forget05", "forget10",
    "retain99", "retain95", "retain90",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
    "retain_perturbed",
    "real_authors", "real_authors_perturbed",
    "world_facts", "world_facts_perturbed",
    "holdout01", "holdout05", "holdout10",
)

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def embedded_dir() -> Path:
    """Folder holding the shipped ``<config>.jsonl`` files."""
    return Path(str(resources.files("mpu_cli.data").joinpath("embedded")))


def _read_json_rows(path: Path) -> list[dict]:
    """JSON-lines (TOFU's hub files, ``.json`` or ``.jsonl``) or a single JSON array."""
    text = _read_utf8(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected one JSON object per row")
    return rows


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}, line {line}); "
                        "accepted: UTF-8 encoded JSON lines") from None


def _read_parquet_rows(files: list[Path]) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for f in files:
        try:
            rows.extend(pq.read_table(f).to_pylist())
        except (pa.ArrowException, OSError) as e:  # a truncated or foreign shard
            why = " ".join(str(e).split())[:200]
            raise DataError(f"{f}: not a readable parquet file ({why}); accepted: parquet shards as the "
                            "Hub's dataset files") from None
    return rows


def _check_config(config: str) -> None:
    if config not in TOFU_CONFIGS:
        raise ValueError(f"unknown TOFU config {config!r}; accepted: {', '.join(TOFU_CONFIGS)}")


def _looks_like_path(source: str) -> bool:
    """True for strings that can only be a filesystem path (not ``name`` / ``owner/name``)."""
    if source.startswith((".", "/", "~")) or "\\" in source:
        return True
    return not _HUB_NAME.match(source)


def _local_config_rows(folder: Path, config: str) -> list[dict] | None:
    """Rows of ``config`` from a TOFU-like folder, or None when the folder has no file for it."""
    for ext in (".json", ".jsonl"):
        f = folder / f"{config}{ext}"
        if f.is_file():
            return _read_json_rows(f)
    sub = folder / config
    if sub.is_dir():
        files = sorted(sub.rglob("*.parquet"))
        if files:
            return _read_parquet_rows(files)
    return None


def _resolve_local(source: str, layout: str = "locuslab/TOFU", contents: str = "",
                   hub: str = "such as 'locuslab/TOFU'") -> Path | None:
    """The folder ``source`` names, None when it is a Hub name; DataError for a missing folder or a file.
    `layout`, `contents`, `hub`: how the message names the expected layout, its folders and the Hub names."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise DataError(f"data source {source!r} is a file, not a folder laid out like {layout}")
    if _looks_like_path(source):
        raise DataError(
            f"data source {source!r} not found: expected {EMBEDDED!r}, an existing local folder laid out like "
            f"{layout}{contents}, or a Hub dataset name {hub}"
        )
    return None


def load_split(source: str, config: str) -> list[dict]:
    """Rows of one TOFU config.

    ``source``: ``"embedded"`` (the shipped data set); a local folder laid out like ``locuslab/TOFU``
    (``<folder>/<config>.json`` / ``.jsonl`` JSON-lines files, or ``<folder>/<config>/**/*.parquet``);
    otherwise a Hub dataset name, loaded with ``datasets.load_dataset(source, config, split="train")``.
    """
    _check_config(config)
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(source, str) or not source:
        raise ValueError(f"data source must be {EMBEDDED!r}, a local folder or a Hub dataset name, got {source!r}")
    if source == EMBEDDED:
        return validate_rows(config, _read_json_rows(embedded_dir() / f"{config}.jsonl"), "embedded data")
    folder = _resolve_local(source)
    if folder is not None:
        rows = _local_config_rows(folder, config)
        if rows is None:
            raise DataError(
                f"config {config!r} not found in data folder {str(folder)!r}: looked for {config}.json, "
                f"{config}.jsonl and {config}/*.parquet"
            )
        return validate_rows(config, rows, str(folder))
    try:
        import datasets

        ds = datasets.load_dataset(source, config, split="train")
    except Exception as e:  # any failure to fetch is a bad-input error for the caller
        raise DataError(
            f"could not load Hub dataset {source!r} (config {config!r}, split 'train'): "
            f"{type(e).__name__}: {e}".splitlines()[0]
            + " (and no local folder of that name exists)"
        ) from e
    return validate_rows(config, [dict(r) for r in ds], source)


def _read_text_lines(path: Path) -> list[str]:
    """One text a line: ``{"text": ...}`` JSON objects, JSON strings, or plain lines (open-unlearning's
    ``idk.jsonl`` is plain lines)."""
    out = []
    for line in _read_utf8(path).splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = line.strip()
        if isinstance(obj, dict):
            text = obj.get("text")
            if not text or not isinstance(text, str):
                raise ValueError(f"{path}: every JSON row needs a non-empty string field 'text'")
            obj = text
        out.append(obj if isinstance(obj, str) else line.strip())
    return out


def _local_text_file(folder: Path, stem: str) -> list[str] | None:
    for ext in (".jsonl", ".json", ".txt"):
        f = folder / f"{stem}{ext}"
        if f.is_file():
            return _read_text_lines(f)
    return None


def load_public_text(source: str = EMBEDDED) -> list[str]:
    """The base model's pre-training corpus (plain sentences).

    Only the embedded data set ships one; a local folder may provide ``public_text.jsonl`` (``{"text"}``
    rows) or ``public_text.txt`` (one text a line). Anything else raises DataError (the embedded base model,
    pretrained on this corpus, cannot be built from it).
    """
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    if source == EMBEDDED:
        return _read_text_lines(embedded_dir() / "public_text.jsonl")
    folder = _resolve_local(source)
    texts = _local_text_file(folder, "public_text") if folder is not None else None
    if texts is None:
        raise DataError(
            f"no public text for data source {source!r}: only {EMBEDDED!r} or a folder with "
            "public_text.jsonl / public_text.txt has one"
        )
    return texts


def load_idk(source: str = EMBEDDED) -> list[str]:
    """Refusal strings ("I don't know" answers) for IdkDPO-style methods.

    A local folder may provide ``idk.jsonl`` / ``idk.json`` / ``idk.txt`` (``{"text"}`` rows or plain lines,
    as open-unlearning's ``data/idk.jsonl``); for any other source the embedded list is used.
    """
    if isinstance(source, (str, os.PathLike)) and source != EMBEDDED:
        p = Path(source).expanduser()
        if p.is_dir():
            texts = _local_text_file(p, "idk")
            if texts:
                return texts
    return _read_text_lines(embedded_dir() / "idk.jsonl")


def split_names(split: str) -> dict:
    """Config names used for one forget split, e.g. ``"forget10"`` ->
    ``{"forget": "forget10", "retain": "retain90", "forget_perturbed": "forget10_perturbed",
    "holdout": "holdout10", "retain_perturbed": "retain_perturbed", "real_authors": "real_authors_perturbed",
    "world_facts": "world_facts_perturbed"}``."""
    if split not in FORGET_SPLITS:
        raise ValueError(f"unknown forget split {split!r}; accepted: {', '.join(FORGET_SPLITS)}")
    pct = split[len("forget"):]
    return {
        "forget": split,
        "retain": f"retain{100 - int(pct):02d}",
        "forget_perturbed": f"{split}_perturbed",
        "holdout": f"holdout{pct}",
        "retain_perturbed": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
    }
