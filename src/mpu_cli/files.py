"""Atomic file writes: temp name in the same folder, flush + fsync, rename. Readers never see half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    from mpu_cli.faults import inject

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inject("atomic_write", path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make results unreadable to the group
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_marked_json(path: Path, marker: Path) -> dict | None:
    """A JSON file that counts only once its completion marker exists: None when either is missing."""
    path, marker = Path(path), Path(marker)
    if not (marker.exists() and path.exists()):
        return None
    return json.loads(path.read_text(encoding="utf-8"))
