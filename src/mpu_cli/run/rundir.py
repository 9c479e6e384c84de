"""The run directory's own state: fresh start, resume, overwrite, completion, failure, and who holds it.

    RUN/.mpu-run.lock  held (flock) by the one process working in the directory (run/runlock.py)
    RUN/.mpu-run    the folder is a run directory: written right after the lock, before anything else
    RUN/run.json    written when the run starts (after every input check): the resolved configuration, its seed
                    as a tag (run/seed_tag.py)
    RUN/MANIFEST.json  the files the run wrote, refreshed when it finishes, fails or is interrupted
    RUN/COMPLETE    written last, after results.csv: the run is finished and its files are final
    RUN/FAILED      the run stopped on an error: its one-line message (removed when the run is resumed)

A folder that holds anything but a run of ours (or what Hydra writes when a job starts) is never used, and only
files of the kinds the run writes, in the places it writes them, are ever removed (`run_file`).

A directory holding a finished run is never written to again unless `overwrite=true`; an unfinished one (also one
stopped before its run.json) is continued only with `resume=true` (or a `run_id=`) and the same configuration.
Both refusals are ConfigErrors (one line, exit code 2) raised under the lock, before anything is written. No
heavy imports here: the CLI's precheck uses it.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import ConfigError
from mpu_cli.evals import benchmarks
from mpu_cli.files import atomic_write_json, atomic_write_text
from mpu_cli.run import runlock, seed_tag, signals
from mpu_cli.run.runlock import RUN_STATE, RunDirError

COMPLETE = "COMPLETE"
FAILED = "FAILED"
MANIFEST = "MANIFEST.json"
# Keys that may differ between the start of a run and its resumption.
VOLATILE = ("resume", "run_id", "overwrite", "hydra")
PRESET_TABLES = ("schedule",)  # read through rounds / client.epochs, which are recorded resolved
# What a run writes into its directory (top-level names), besides every benchmark's EVAL and SUMMARY files;
# .hydra/, the log, the lock and the marker stay.
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


def recorded_config(cfg) -> dict:
    """`run_config` as run.json records it: the seed as its public tag (run/seed_tag.py)."""
    return seed_tag.public_config(run_config(cfg))


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


def check(cfg, out: Path) -> str:
    """'fresh', 'resume' or 'overwrite'; ConfigError when the directory must not be touched."""
    out = Path(out)
    state_path = out / RUN_STATE
    finished = (out / COMPLETE).exists()
    # a run that stopped before its run.json (in the input checks or prepare) is an unfinished run too
    started = state_path.exists() or (runlock.is_run(out) and not runlock.made_here(out))
    if not (finished or started):
        if not runlock.usable(out):
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
    if not state_path.exists():
        return "resume"  # stopped before its inputs were checked: nothing recorded to compare with
    try:
        old = json.loads(state_path.read_text(encoding="utf-8"))["config"]
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{state_path}: unreadable run state ({e}); pass overwrite=true to start over") from None
    now = json.loads(json.dumps(recorded_config(cfg), default=str))
    was = flat(seed_tag.public_config(old, cfg.prepare.cache_dir))  # (a run.json of before tags: its plain seed)
    now = flat(now)
    diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}={was.get(k)!r} (now {now.get(k)!r})" for k in diff[:4])
        raise ConfigError(f"cannot resume {str(out)!r}: it was started with another configuration: {shown}"
                          f"{' …' if len(diff) > 4 else ''}; resume with the same settings, or pass overwrite=true")
    return "resume"


def start(cfg, out: Path, mode: str) -> None:
    """Record the run (after every input check passed). overwrite: remove the previous run's outputs first."""
    out = Path(out)
    if mode == "overwrite":
        remove_outputs(out)
    if mode != "resume" or not (out / RUN_STATE).exists():
        atomic_write_json(out / RUN_STATE, {"config": recorded_config(cfg), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (out / FAILED).unlink(missing_ok=True)  # a resumed run is no longer the failed one


def finish(out: Path) -> None:
    signals.check()  # a stop signal that did not stop the run on its way stops it before it is called finished
    write_manifest(out)
    atomic_write_text(Path(out) / COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


# The run's own folders: only a run writes into these.
OWN_FOLDERS = ("server_private", "exchange", "client")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja")


def run_file(rel: str) -> bool:
    """A file of a kind the run writes, where it writes it (relative to RUN): what MANIFEST.json lists and
    overwrite=true may remove. A user's file beside them (notes.md, target/mine.txt, logs/keep.log) is not."""
    parts = rel.split("/")
    if rel.endswith(".tmp") or ".." in parts:
        return False
    if len(parts) == 1:
        return (parts[0] in OUTPUTS or parts[0] in benchmarks.eval_files()) and \
            parts[0] not in ("target", "retain", "model", "logs") + OWN_FOLDERS
    top, name = parts[0], parts[-1]
    if top in OWN_FOLDERS:
        return True
    if top == "logs":
        return len(parts) == 2 and name.startswith(("server", "client_")) and name.endswith(".log")
    if top in ("target", "retain", "model") and len(parts) == 2:
        return name in benchmarks.eval_files() or name in MODEL_FILES or name.endswith(".safetensors")
    return False


def write_manifest(out: Path) -> None:
    """MANIFEST.json: the files under RUN that this run wrote (`run_file`)."""
    out = Path(out)
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    atomic_write_json(out / MANIFEST, {"files": sorted({f for f in files if run_file(f)} | {MANIFEST, COMPLETE})})


def remove_outputs(out: Path) -> None:
    """overwrite=true: remove what the previous run wrote — its files (`run_file`) — and nothing else; a folder
    left empty goes too. COMPLETE goes first: an interrupted clean-up never leaves a folder that looks finished."""
    out = Path(out)
    (out / COMPLETE).unlink(missing_ok=True)
    root = out.resolve()
    for p in sorted(out.rglob("*"), key=lambda p: -len(p.parts)):
        rel = p.relative_to(out).as_posix()
        if (p.is_file() or p.is_symlink()) and run_file(rel) and p.parent.resolve().is_relative_to(root):
            p.unlink()
    for d in sorted((p for p in out.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        if d.name != ".hydra" and not any(d.iterdir()):
            d.rmdir()


def lock(out: Path) -> None:
    """Hold the run directory for the rest of this process (run/runlock.py); ConfigError (exit 2, nothing
    touched) when another process holds it. Taking it again in the same process is a no-op."""
    try:
        runlock.claim(out)
    except RunDirError as e:
        raise ConfigError(str(e)) from None


def mark_failed(out: Path, message: str) -> bool:
    """Record why a run stopped (RUN/FAILED, one line) where the folder is this process's own: it holds the
    folder's lock (never a folder of another run, finished or not); a record that cannot be written (a full
    disk) is left out. Returns whether the folder is its own."""
    out = Path(out)
    if not out.is_dir() or (out / COMPLETE).exists():
        return False
    own = runlock.holds(out)
    if own:
        try:
            atomic_write_text(out / FAILED, " ".join(str(message).split()) + "\n")
            write_manifest(out)
        except OSError:  # the disk that stopped the run takes no record either: the one line says why
            pass
    return own


def failure(out: Path) -> str | None:
    """The recorded error line of a failed run (None when it did not fail or has since finished)."""
    out = Path(out)
    if (out / COMPLETE).exists() or not (out / FAILED).is_file():
        return None
    return (out / FAILED).read_text(encoding="utf-8").strip() or "failed (no message recorded)"


def precheck(cfg) -> str | None:
    """Before Hydra makes the run directory (and writes .hydra/ into it): claim it — lock and marker, a foreign or
    busy one refused with nothing written — then, under the lock, refuse a finished or mismatching run (another
    configuration, or a model file changed since it started). Returns
    the override that pins Hydra to the claimed directory where its name is time-stamped (Hydra would stamp it
    again, maybe a second later; two runs started together get two names), else None."""
    out, pin = _claim(cfg, "run", stamped=lambda raw: cfg.get("run_id") is None and "${now:" in raw)
    if out is not None:
        runlock.release_unused(keep=out)  # a directory claimed from the command line alone that is not this one
        if check(cfg, out) == "resume":
            from mpu_cli.run.identity import check_recorded

            check_recorded(out)  # a model changed since the start: refused before Hydra writes into the folder
    return pin


def precheck_sweep(cfg) -> str | None:
    """A sweep's folder (hydra.sweep.dir), before Hydra writes into it: locked by the sweeping process, so two
    sweeps never share one (a time-stamped name gets a free one, pinned as a run's is); its multirun.yaml made
    the owner's only."""
    out, pin = _claim(cfg, "sweep", stamped=lambda raw: "${now:" in raw)
    if out is not None:
        # Hydra records the sweep's command line there, its seeds included: a file for the owner only (Hydra
        # writes into it, keeping its mode)
        runlock.private_file(out / "multirun.yaml")
    return pin


def _claim(cfg, kind: str, stamped) -> tuple[Path | None, str | None]:
    try:
        where = OmegaConf.select(cfg, f"hydra.{kind}.dir")
        raw = str(cfg.hydra[kind]._get_node("dir")._value())
    except Exception:  # noqa: BLE001 (e.g. an interpolation only Hydra's runtime can resolve: the job locks it)
        return None, None
    if not where:
        return None, None
    unique = stamped(raw)
    try:
        out = runlock.claim(Path(str(where)), unique=unique, run=kind == "run")
    except RunDirError as e:
        raise ConfigError(str(e)) from None
    return out, f"hydra.{kind}.dir={_override_value(str(out))}" if unique else None


def _override_value(text: str) -> str:
    """A path as one value of a Hydra override (quoted where its grammar would read a character otherwise)."""
    if re.fullmatch(r"[A-Za-z0-9_./:+@%-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
