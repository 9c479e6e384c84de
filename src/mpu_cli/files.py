"""Atomic file writes: temp name in the same folder, flush + fsync, rename. Readers never see half a file.
`write_failure` words a failed write in one line with its exit code."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path


PRIVATE_MARKER = ".private"  # in a folder made by make_private: its files are readable by their owner only


# The disk is full (or the user's quota, or the largest file it takes): a fault of the machine, not of the input.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# The place the user named cannot take a file (bad input, exit 2); any other OSError is a fault (exit 1).
_BAD_PLACE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT)


def write_failure(e: OSError, what: str) -> tuple[str, int]:
    """One line for an OSError raised while writing `what`, and the exit code: 2 when the named place is
    read-only, not a folder or not ours; 1 for a fault such as a full disk."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return f"cannot write {what}{where}: {e.strerror or e}", (2 if e.errno in _BAD_PLACE else 1)


def unwritable(folder: Path, create: bool = True) -> str | None:
    """Why `folder` (created when missing) cannot take a file, or None: checked before work whose output
    would otherwise be lost at its end. create=False creates nothing: the nearest existing folder on the way
    must be a writable folder."""
    if not create:
        folder = Path(folder).expanduser().absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            return f"{existing} is not a folder"
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
        return None if os.access(existing, os.W_OK | os.X_OK) else os.strerror(errno.EACCES)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_private(folder: Path) -> Path:
    """A folder for secrets (the server's θ and round secrets): 0700, and every file written below it 0600."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    (folder / PRIVATE_MARKER).touch(mode=0o600)
    return folder


def file_mode(path: Path) -> int:
    """0600 below a private folder (up to three levels up), else 0666 less the umask: outputs honour the umask
    (mkstemp's own 0600 would make results unreadable to the group)."""
    for parent in list(Path(path).parents)[:3]:
        if (parent / PRIVATE_MARKER).exists():
            return 0o600
    return 0o666 & ~_umask()


def append_line(path: Path, line: str) -> None:
    """One line appended to a log, the file created with `file_mode` (0600 in a private folder)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode(path))
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")


def seal_private(folder: Path) -> None:
    """Everything below `folder` (written by a library that honours only the umask) made owner-only: folders
    0700, files 0600."""
    os.chmod(folder, 0o700)
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o700)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o600)


def atomic_write_text(path: Path, text: str) -> None:
    from mpu_cli.faults import inject

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inject("atomic_write", path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


NON_FINITE_FLAG = "non_finite"


def finite_json(obj):
    """`obj` with every NaN / ±Infinity float replaced by null: JSON has no such literals and strict readers
    reject them. A dict that had one gets the flag key "non_finite": {key: "nan" | "inf" | "-inf"}, so the
    value is not silently a missing one. numpy scalars and arrays become Python numbers and lists."""
    import math

    import numpy as np

    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out, bad = {}, {}
        for k, v in obj.items():
            if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
                bad[k] = str(float(v))
            out[k] = finite_json(v)
        if bad:
            out[NON_FINITE_FLAG] = bad
        return out
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj) -> None:
    """The one JSON writer: atomic, strict JSON (non-finite numbers become null plus a flag, see finite_json)."""
    text = json.dumps(finite_json(obj), indent=2, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")
