"""The run directory's own state (issue 7): fresh start, resume, overwrite, completion.

    RUN/run.json    written when the run starts (after every input check): the resolved configuration
    RUN/COMPLETE    written last, after results.csv: the run is finished and its files are final
    RUN/FAILED      the run stopped on an error: its one-line message (removed when the run is resumed)

A directory holding a finished run is never written to again unless `overwrite=true`; an unfinished one is
continued only with `resume=true` (or a `run_id=`) and the same configuration. Both refusals are ConfigErrors
(one line, exit code 2) raised before anything is written. No heavy imports here: the CLI's precheck uses it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import ConfigError
from mpu_cli.files import atomic_write_json, atomic_write_text

RUN_STATE = "run.json"
COMPLETE = "COMPLETE"
FAILED = "FAILED"
# Keys that may differ between the start of a run and its resumption.
VOLATILE = ("resume", "run_id", "overwrite", "hydra")
# What a run writes into its directory (overwrite=true removes these; .hydra/ and logs stay).
OUTPUTS = (COMPLETE, FAILED, RUN_STATE, "results.csv", "TOFU_EVAL.json", "TOFU_SUMMARY.json", "server_public.json",
           "target", "retain", "model", "server_private", "exchange", "client", "logs")


def run_config(cfg) -> dict:
    """The resolved configuration that determines a run's results (without resume / overwrite / hydra)."""
    out = {}
    for key in cfg:
        if key in VOLATILE:  # hydra's own keys may not resolve outside a running job
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


def check(cfg, out: Path) -> str:
    """'fresh', 'resume' or 'overwrite'; ConfigError when the directory must not be touched."""
    out = Path(out)
    state_path = out / RUN_STATE
    finished, started = is_finished(out), state_path.exists()
    if not (finished or started):
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
        for name in OUTPUTS:  # COMPLETE first: an interrupted clean-up never leaves a 'finished' folder
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if mode != "resume":
        atomic_write_json(out / RUN_STATE, {"config": run_config(cfg), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (out / FAILED).unlink(missing_ok=True)  # a resumed run is no longer the failed one


def finish(out: Path) -> None:
    atomic_write_text(Path(out) / COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def mark_failed(out: Path, message: str) -> bool:
    """Record why a run stopped (RUN/FAILED, one line) where the folder is this run's own: this process started
    the run in it, or it holds nothing but what Hydra wrote when the job started (never a folder of another
    run, finished or not). Returns whether it wrote."""
    out = Path(out)
    if not out.is_dir() or (out / COMPLETE).exists():
        return False
    own = out.resolve() in _STARTED or all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir())
    if own:
        atomic_write_text(out / FAILED, " ".join(str(message).split()) + "\n")
    return own


def failure(out: Path) -> str | None:
    """The recorded error line of a failed run (None when it did not fail or has since finished)."""
    out = Path(out)
    if (out / COMPLETE).exists() or not (out / FAILED).is_file():
        return None
    return (out / FAILED).read_text(encoding="utf-8").strip() or "failed (no message recorded)"


def precheck(cfg) -> None:
    """Before Hydra creates the run directory (and rewrites .hydra/ in it): refuse a finished or mismatching one."""
    try:
        where = OmegaConf.select(cfg, "hydra.run.dir")
    except Exception:  # noqa: BLE001 (e.g. an interpolation only Hydra's runtime can resolve)
        return
    if where and Path(str(where)).is_dir():
        check(cfg, Path(str(where)))
