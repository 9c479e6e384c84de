"""The content-addressed cache (prepared models, fixed-model evaluations, converted GGUF files).

    ROOT/<prefix>-<digest of key>/           one entry: built once, then reused while it verifies
    ROOT/<prefix>-<digest of key>/COMPLETE   its marker, written last: {key, info, files: {name: SHA-256}}
    ROOT/.<entry>.lock                       held while the entry is checked or built
    ROOT/.<entry>.tmp<pid>                   a build in progress (removed when its process is gone)

An entry is reused only when its marker is readable and every file matches the hash recorded when it was built;
otherwise (a file damaged, truncated, missing or added) it is rebuilt. Processes that want the same entry at the
same time wait for the one that builds it instead of building it side by side.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from mpu_cli.digest import file_sha256, value_digest

log = logging.getLogger(__name__)

MARKER = "COMPLETE"


def entry(root: Path, prefix: str, key: dict, build: Callable[[Path], dict | None], what: str) -> Path:
    """The verified entry of `key` under `root`, built by `build(folder)` (which writes the entry's files into
    `folder` and returns a JSON-able info record, or None) when it is missing or damaged. `what` names the
    entry in the log ("target model")."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{prefix}-{value_digest(key)}"
    with open(root / f".{out.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / MARKER).exists():
            problem = damaged(out)
            if problem is None:
                log.info("reusing the cached %s %s", what, out)
                return out
            log.warning("the cached %s %s is damaged (%s): rebuilding it", what, out, problem)
            (out / MARKER).unlink(missing_ok=True)
        remove_stale_builds(root)
        log.info("building the %s -> %s", what, out)
        # Built under a temporary name, marker included, then renamed: a killed build leaves only a `.tmp`
        # folder, never a folder under the final name with a marker.
        tmp = root / f".{out.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            info = build(tmp)
            mark(tmp, MARKER, {"key": key, "info": info})
            if out.exists():
                shutil.rmtree(out)  # an unmarked or damaged leftover
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _files(folder: Path, marker: str) -> list[str]:
    """Every file below `folder` but its marker, as sorted relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != marker)


def mark(folder: Path, marker: str, record: dict) -> None:
    """Write `record` plus the content hash of every file of `folder` as its marker (last: the folder is final)."""
    from mpu_cli.files import atomic_write_json

    folder = Path(folder)
    atomic_write_json(folder / marker, record | {"files": {f: file_sha256(folder / f) for f in _files(folder, marker)}})


def read_marker(folder: Path, marker: str = MARKER) -> dict | None:
    """The marker's record, or None when it is missing or unreadable."""
    try:
        record = json.loads((Path(folder) / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def damaged(folder: Path, marker: str = MARKER) -> str | None:
    """Why a marked folder cannot be used (its marker unreadable, a file changed, missing or added since it was
    marked), or None when every file matches."""
    folder = Path(folder)
    record = read_marker(folder, marker)
    if record is None:
        return f"its {marker} marker is missing or unreadable"
    recorded = record["files"]
    for name in sorted(set(recorded) | set(_files(folder, marker))):
        if name not in recorded:
            return f"{name} was not part of it when it was built"
        if not (folder / name).is_file():
            return f"{name} is missing"
        if file_sha256(folder / name) != recorded[name]:
            return f"{name} does not match the hash recorded when it was built"
    return None


def built_info(folder: Path) -> dict:
    """The info record its build returned ({} for a folder that is not a cache entry)."""
    record = read_marker(folder)
    return (record or {}).get("info") or {}


def remove_stale_builds(root: Path) -> None:
    """Temporary folders of builds whose process is gone (killed mid-build) are removed."""
    for tmp in Path(root).glob(".*.tmp*"):
        pids = [int(x) for x in re.findall(r"\.tmp(\d+)", tmp.name)]
        if tmp.is_dir() and pids and not any(_alive(pid) for pid in pids):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
