"""Who works in a run directory, decided before anything is written into it (standard library only: mpu-run
claims its directory in its first lines, before Hydra and torch are imported).

    RUN/.mpu-run.lock  held (flock) by the one process working in the directory; holds that process's pid
    RUN/.mpu-run       the folder is an mpu-run run directory: written right after the lock, before anything else

`claim(out)` refuses a folder that is not a run of ours (nothing written), takes the lock atomically (a busy
directory is refused, nothing written), then marks the directory. A process that claimed a directory it then
never used (bad input, Ctrl-C while starting) gives it back with `release_unused()`: what it created is removed.
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from mpu_cli.run import signals

LOCK = ".mpu-run.lock"
MARKER = ".mpu-run"
RUN_STATE = "run.json"  # a run started before markers existed is recognised by its run.json


class RunDirError(ValueError):
    """The run directory cannot be used: one line, exit code 2, nothing written."""


@dataclass
class _Held:
    fd: int
    new: bool  # this process made the folder a run directory (it was absent, empty or held only Hydra's files)
    created: list[Path] = field(default_factory=list)  # what this process created, removed by release_unused
    earlier: tuple[bytes, int, int] | None = None  # an existing lock file's content, atime and mtime (ns)


_HELD: dict[Path, _Held] = {}


def is_run(out: Path) -> bool:
    """The folder is a run directory of ours (marked, or a run.json of a run started before markers)."""
    out = Path(out)
    return (out / MARKER).is_file() or (out / RUN_STATE).is_file()


def _hydra_only(out: Path) -> bool:
    """Empty, or only what Hydra and the lock put there when a job started (a run of an earlier version that
    stopped before it wrote anything)."""
    return all(p.name in (".hydra", LOCK) or (p.suffix == ".log" and p.is_file()) for p in out.iterdir())


def usable(out: Path) -> bool:
    """Absent, empty, Hydra's files only, or a run of ours: a folder of other files is never used."""
    out = Path(out)
    if not out.exists():
        return True
    return out.is_dir() and (is_run(out) or _hydra_only(out))


def made_here(out: Path) -> bool:
    """This process made the folder a run directory: whatever run state is there is its own."""
    held = _HELD.get(Path(out).resolve())
    return held is not None and held.new


def holds(out: Path) -> bool:
    return Path(out).resolve() in _HELD


def claim(out: Path, unique: bool = False, run: bool = True) -> Path:
    """Lock `out` for this process and mark it as a run directory; returns it (resolved). Taking it again in the
    same process is a no-op. unique: a time-stamped default name — where it is taken, the first free
    `<name>-2`, `<name>-3`, … is used instead (made by this process, so runs started together never share one).
    run=False: a sweep's folder, only locked (it holds its jobs' folders, not a run).
    RunDirError when the folder is not ours, is busy or cannot be written; nothing is written then."""
    with signals.held_back():  # SIGINT / SIGTERM wait until what it made is known (release_unused removes it)
        return _claim(Path(out).resolve(), unique, run)


def _claim(out: Path, unique: bool, run: bool) -> Path:
    if out in _HELD:
        return out
    base = out
    for n in range(2, 1000):
        if run and not unique:
            _refuse_foreign(out)
        created = _make_dirs(out, exclusive=unique)
        if created is not None:
            break
        out = base.with_name(f"{base.name}-{n}")  # unique: that name is taken (by another run started with us)
    else:
        raise RunDirError(f"run directory {str(base)!r}: no free name beside it; choose a run_id")
    _lock(out, created, run)
    return out


def _refuse_foreign(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"run directory {str(out)!r} is a file; nothing was written or removed: choose a new "
                          "or empty folder (hydra.run.dir=…) or a run_id")
    if not usable(out):
        raise RunDirError(f"run directory {str(out)!r} is a folder that holds other files and is not an mpu-run "
                          "run; nothing was written or removed: choose a new or empty folder (hydra.run.dir=…) "
                          "or a run_id")


def _make_dirs(out: Path, exclusive: bool) -> list[Path] | None:
    """Create `out` and its missing parents; the folders this call created (outermost first). exclusive: None
    when `out` exists already."""
    created = []
    for p in [*reversed(out.parents), out]:
        try:
            os.mkdir(p)
            created.append(p)
        except FileExistsError:
            if p == out and exclusive:
                return None
        except OSError as e:
            if p != out and p.is_dir():  # e.g. a read-only folder above that exists already
                continue
            raise RunDirError(f"run directory {str(out)!r} cannot be written ({e.strerror}); accepted: a folder "
                              "this user can write (hydra.run.dir=… or run_id=… under a writable outputs/)") from None
    return created


def _lock(out: Path, created: list[Path], run: bool) -> None:
    path = out / LOCK
    for _ in range(100):
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
                made = True
            except FileExistsError:
                fd, made = os.open(path, os.O_RDWR), False
        except FileNotFoundError:  # the folder was just given back by a process that claimed it: make it again
            created += _make_dirs(out, exclusive=False) or []
            continue
        except OSError as e:
            raise RunDirError(f"run directory {str(out)!r} cannot be written ({e.strerror}); accepted: a folder "
                              "this user can write (hydra.run.dir=… or run_id=…)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(f"run directory {str(out)!r} is in use by another mpu-run process (pid {holder}); "
                              "nothing was touched: wait for it to end, or choose another hydra.run.dir / run_id"
                              ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the lock file was removed by its last holder while we waited: lock the new one
    else:
        raise RunDirError(f"run directory {str(out)!r}: its lock could not be taken; retry")
    if run and not usable(out):  # a folder of other files appeared between the check and the lock
        os.close(fd)
        raise RunDirError(f"run directory {str(out)!r} is a folder that holds other files and is not an mpu-run "
                          "run; nothing was removed: choose a new or empty folder")
    earlier = None
    if made:
        created.append(path)
    else:  # put back as it was if this process gives the folder back unused
        st = os.fstat(fd)
        earlier = (os.pread(fd, 64, 0), st.st_atime_ns, st.st_mtime_ns)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    new = run and not is_run(out)
    if new:
        _write_marker(out / MARKER)
        created.append(out / MARKER)
    _HELD[out] = _Held(fd, new, created, earlier)


def _write_marker(path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"mpu-run run directory, started {time.strftime('%Y-%m-%dT%H:%M:%S')}\n", encoding="utf-8")
    os.replace(tmp, path)


def private_file(path: Path) -> None:
    """An empty file readable by its owner only, in a folder this process holds (given back with it when unused);
    one that exists is left as it is."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    held = _HELD.get(path.parent.resolve())
    if held is not None:
        held.created.append(path)


def release_unused(keep: Path | None = None) -> None:
    """Give back every directory this process claimed but never ran in (bad input, interrupted while starting),
    but `keep`: the marker, the lock file and the folders it created are removed; nothing else is touched."""
    for out, held in list(_HELD.items()):
        if out == keep:
            continue
        for p in reversed(held.created):
            try:
                p.rmdir() if p.is_dir() else p.unlink()
            except OSError:  # a folder that is not empty (or already gone) stays
                pass
        if held.earlier is not None:
            content, atime, mtime = held.earlier
            os.ftruncate(held.fd, 0)
            os.pwrite(held.fd, content, 0)
            os.utime(held.fd, ns=(atime, mtime))
        os.close(held.fd)
        del _HELD[out]


def release(out: Path) -> None:
    """Stop holding `out` (the run in it stays as it is)."""
    held = _HELD.pop(Path(out).resolve(), None)
    if held is not None:
        os.close(held.fd)


_LITERAL = re.compile(r"[A-Za-z0-9_./~+@%:-]+")  # no interpolation, quoting, sweep list or escape


def named_dir(argv: list[str], root_config: Path) -> Path | None:
    """The run directory a single run's command line names outright, read without Hydra: `hydra.run.dir=<path>`,
    or `run_id=<name>` placed in the root config's hydra.run.dir. None when the command line does not name it
    that plainly (a flag, another config, an interpolation): the composed configuration decides then."""
    if any(a.startswith("-") for a in argv):
        return None
    values: dict[str, list[str]] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep:
            values.setdefault(key, []).append(value)
    given = values.get("hydra.run.dir")
    if given:
        return Path(given[0]) if len(given) == 1 and _LITERAL.fullmatch(given[0]) else None
    run_id = values.get("run_id")
    if not run_id or len(run_id) != 1 or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id[0]):
        return None
    try:  # the root config's run directory: <folder>/${mpu_run_name:${run_id},<default name>}
        text = root_config.read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^hydra:\s*\n\s+run:\s*\n\s+dir:\s*(\S*/)\$\{mpu_run_name:\$\{run_id\},", text, re.MULTILINE)
    return Path(m.group(1)) / run_id[0] if m else None
