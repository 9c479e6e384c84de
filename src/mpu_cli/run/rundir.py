"""The run directory's own state: fresh start, resume, overwrite, completion, failure, and who holds it.

    RUN/.mpu-run.lock  held (flock) by the one process working in the directory; taken before Hydra writes .hydra/
    RUN/run.json    written when the run starts (after every input check): the resolved configuration
    RUN/MANIFEST.json  the files the run wrote, refreshed when it finishes, fails or is interrupted
    RUN/COMPLETE    written last, after results.csv: the run is finished and its files are final
    RUN/FAILED      the run stopped on an error: its one-line message (removed when the run is resumed)

A folder that holds anything but a run of ours (or what Hydra writes when a job starts) is never used.

A directory holding a finished run is never written to again unless `overwrite=true`; an unfinished one is
continued only with `resume=true` (or a `run_id=`) and the same configuration. Both refusals are ConfigErrors
(one line, exit code 2) raised before anything is written. No heavy imports here: the CLI's precheck uses it.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import ConfigError
from mpu_cli.evals import benchmarks
from mpu_cli.files import atomic_write_json, atomic_write_text

RUN_STATE = "run.json"
COMPLETE = "COMPLETE"
FAILED = "FAILED"
LOCK = ".mpu-run.lock"
MANIFEST = "MANIFEST.json"
# Keys that may differ between the start of a run and its resumption.
VOLATILE = ("resume", "run_id", "overwrite", "hydra")
PRESET_TABLES = ("schedule",)  # read through rounds / client.epochs, which are recorded resolved
# What a run writes into its directory, besides every benchmark's EVAL and SUMMARY files: overwrite=true removes
# these when the run left no manifest (killed outright); .hydra/ and the log stay.
OUTPUTS = (COMPLETE, FAILED, MANIFEST, RUN_STATE, "results.csv", "server_public.json",
           "target", "retain", "model", "server_private", "exchange", "client", "logs")


def run_config(cfg) -> dict:
    """The resolved configuration that determines a run's results (without resume / overwrite / hydra)."""
    out = {}
    for key in cfg:
        if key in VOLATILE or key in PRESET_TABLES:  # hydra's own keys may not resolve outside a running job
            continue
        value = cfg[key]
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def flat(d, prefix: str = "") -> dict:
    """A nested dict as {dotted.key: leaf}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def resuming(cfg) -> bool:
    return bool(cfg.get("resume")) or cfg.get("run_id") is not None


def is_finished(out: Path) -> bool:
    out = Path(out)
    # results.csv without run.json: a finished run written before run.json existed
    return (out / COMPLETE).exists() or ((out / "results.csv").exists() and not (out / RUN_STATE).exists())


def _hydra_only(out: Path) -> bool:
    """Empty, or only what Hydra (and our lock) put there when a job started."""
    return all(p.name in (".hydra", LOCK) or (p.suffix == ".log" and p.is_file()) for p in out.iterdir())


def check(cfg, out: Path) -> str:
    """'fresh', 'resume' or 'overwrite'; ConfigError when the directory must not be touched."""
    out = Path(out)
    state_path = out / RUN_STATE
    finished, started = is_finished(out), state_path.exists()
    if not (finished or started):
        if out.exists() and not (out.is_dir() and _hydra_only(out)):
            what = "a file" if not out.is_dir() else "a folder that holds other files and is not an mpu-run run"
            raise ConfigError(f"run directory {str(out)!r} is {what}; nothing was written or removed: choose a new "
                              "or empty folder (hydra.run.dir=…) or a run_id")
        return "fresh"
    if cfg.get("overwrite"):
        return "overwrite"
    if finished:
        raise ConfigError(f"run directory {str(out)!r} already holds a finished run; nothing was overwritten: "
                          "pass overwrite=true to replace it, or choose another hydra.run.dir / run_id")
    if not resuming(cfg):
        raise ConfigError(f"run directory {str(out)!r} holds an unfinished run; pass resume=true to continue it, "
                          "or overwrite=true to start it over")
    try:
        old = json.loads(state_path.read_text(encoding="utf-8"))["config"]
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{state_path}: unreadable run state ({e}); pass overwrite=true to start over") from None
    was, now = flat(old), flat(json.loads(json.dumps(run_config(cfg), default=str)))
    diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}={was.get(k)!r} (now {now.get(k)!r})" for k in diff[:4])
        raise ConfigError(f"cannot resume {str(out)!r}: it was started with another configuration: {shown}"
                          f"{' …' if len(diff) > 4 else ''}; resume with the same settings, or pass overwrite=true")
    return "resume"


_STARTED: set[Path] = set()  # run directories this process started or resumed


def start(cfg, out: Path, mode: str) -> None:
    """Record the run (after every input check passed). overwrite: remove the previous run's outputs first."""
    out = Path(out)
    _STARTED.add(out.resolve())
    if mode == "overwrite":
        remove_outputs(out)
    if mode != "resume":
        atomic_write_json(out / RUN_STATE, {"config": run_config(cfg), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (out / FAILED).unlink(missing_ok=True)  # a resumed run is no longer the failed one


def finish(out: Path) -> None:
    write_manifest(out)
    atomic_write_text(Path(out) / COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def _kept(rel: str) -> bool:
    """Hydra's own files and the lock are not the run's outputs."""
    return rel.startswith(".hydra/") or rel == LOCK or ("/" not in rel and rel.endswith(".log"))


def write_manifest(out: Path) -> None:
    """MANIFEST.json: every file under RUN that this run wrote (everything but Hydra's files and the lock; a
    folder of other files is never used as a run directory, so nothing else is there)."""
    out = Path(out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    files = [f for f in files if not _kept(f) and not f.endswith(".tmp")]
    atomic_write_json(out / MANIFEST, {"files": sorted(set(files) | {MANIFEST, COMPLETE})})


def remove_outputs(out: Path) -> None:
    """overwrite=true: remove what the previous run wrote — the files of its manifest — and nothing else.
    COMPLETE goes first: an interrupted clean-up never leaves a folder that looks finished."""
    out = Path(out)
    (out / COMPLETE).unlink(missing_ok=True)
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if listed is None:  # killed outright before any manifest: the run's own names (files of other names stay)
        for name in (*OUTPUTS, *benchmarks.eval_files()):
            p = out / name
            if p.is_dir() and name in ("server_private", "exchange", "client"):
                shutil.rmtree(p)  # only a run writes into these
            elif p.is_file():
                p.unlink()
        listed = [p.relative_to(out).as_posix() for name in ("target", "retain", "model", "logs")
                  for p in (out / name).glob("*") if p.is_file() and _run_file(p)]
    for rel in listed:
        p = out / rel
        if out.resolve() in p.resolve().parents and p.is_file():
            p.unlink()
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if d.name != ".hydra" and not any(d.iterdir()):
            d.rmdir()


def _run_file(p: Path) -> bool:
    """A file of the kind the run writes into target/, retain/, model/, logs/ (for a run without a manifest)."""
    return (p.name in (*benchmarks.eval_files(), "config.json", "generation_config.json",
                       "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
            or p.suffix == ".safetensors" or (p.parent.name == "logs" and p.name.startswith(("server", "client_"))))


def writable_or_refuse(out: Path) -> None:
    """The run directory, or the nearest folder above it that exists, must be writable (before Hydra tries)."""
    p = Path(out).resolve()
    while not p.exists():
        p = p.parent
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"run directory {str(out)!r} cannot be written ({str(p)!r} is read-only for this user); "
                          "accepted: a folder this user can write (hydra.run.dir=… or run_id=…)")


_LOCKS: dict[Path, int] = {}  # run directories this process holds: path -> open lock file descriptor


def lock(out: Path) -> None:
    """Hold RUN/.mpu-run.lock for the rest of this process; ConfigError (exit 2, nothing touched) when another
    process holds it. Taking it again in the same process is a no-op."""
    out = Path(out).resolve()
    if out in _LOCKS:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise ConfigError(f"run directory {str(out)!r} cannot be written ({e.strerror}); accepted: a folder this "
                          "user can write (hydra.run.dir=… or run_id=… under a writable outputs/)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"run directory {str(out)!r} is in use by another mpu-run process (pid {holder}); "
                          "nothing was touched: wait for it to end, or choose another hydra.run.dir / run_id") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[out] = fd


def mark_failed(out: Path, message: str) -> bool:
    """Record why a run stopped (RUN/FAILED, one line) where the folder is this run's own: this process started
    the run in it, or it holds nothing but what Hydra wrote when the job started (never a folder of another
    run, finished or not). Returns whether it wrote."""
    out = Path(out)
    if not out.is_dir() or (out / COMPLETE).exists():
        return False
    own = out.resolve() in _STARTED or _hydra_only(out)
    if own:
        atomic_write_text(out / FAILED, " ".join(str(message).split()) + "\n")
        write_manifest(out)
    return own


def failure(out: Path) -> str | None:
    """The recorded error line of a failed run (None when it did not fail or has since finished)."""
    out = Path(out)
    if (out / COMPLETE).exists() or not (out / FAILED).is_file():
        return None
    return (out / FAILED).read_text(encoding="utf-8").strip() or "failed (no message recorded)"


def precheck(cfg, take_lock: bool = False) -> None:
    """Before Hydra creates the run directory (and rewrites .hydra/ in it): refuse a finished, mismatching,
    foreign or busy one. take_lock: hold its lock from now on (a named directory only: a time-stamped default
    is locked by the run itself, once Hydra has made it)."""
    try:
        where = OmegaConf.select(cfg, "hydra.run.dir")
        raw = str(cfg.hydra.run._get_node("dir")._value())
    except Exception:  # noqa: BLE001 (e.g. an interpolation only Hydra's runtime can resolve)
        return
    if not where:
        return
    if Path(str(where)).exists():
        check(cfg, Path(str(where)))
    writable_or_refuse(Path(str(where)))
    if take_lock and "${now:" not in raw:
        lock(Path(str(where)))
        check(cfg, Path(str(where)))  # again under the lock: another process may have just finished in it
