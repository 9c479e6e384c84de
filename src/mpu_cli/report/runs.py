"""Reading a folder of runs: one record per run directory with its status, configuration and metrics.

A *run* is a folder with ``run.json`` (written when a run starts), ``results.csv`` or ``.hydra/config.yaml``.
Its status is *finished* (COMPLETE, or results.csv from before run.json existed, plus results.csv and its
benchmark's summary file, e.g. TOFU_SUMMARY.json), *failed* (FAILED: the run stopped on an error, whose one line is kept) or *unfinished*
(anything else: still running, or killed). The configuration is the resolved one of run.json, flattened to
dotted keys; metrics come from the run's own summary file; results.csv adds the target's hash, the
target's metrics and the timings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from mpu_cli.evals import benchmarks
from mpu_cli.run import rundir

FINISHED, FAILED, UNFINISHED = "finished", "failed", "unfinished"
REQUIRED = ("results.csv",)  # and its benchmark's summary file (evals.benchmarks.of_folder)
RETAIN_PREFIX = "retainmodel_"  # columns of the retain model's metrics (target_ holds the target's)


def find_runs(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in (".hydra", "server_private", "exchange", "model"))
        here = Path(dirpath)
        if {"run.json", "results.csv"} & set(filenames) or (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
    return found


def _rel(run: Path, root: Path) -> str:
    rel = run.resolve().relative_to(root.resolve()).as_posix()
    return rel if rel != "." else run.name


def run_config(run: Path, results: dict | None) -> dict:
    """The run's resolved configuration as {dotted key: value}: run.json, else results.csv's config columns
    (runs from before run.json), else Hydra's .hydra/config.yaml."""
    try:
        return rundir.flat(json.loads((run / rundir.RUN_STATE).read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if results:
        return dict(results)
    try:
        from omegaconf import OmegaConf

        return rundir.flat(rundir.run_config(OmegaConf.load(run / ".hydra" / "config.yaml")))
    except Exception:  # noqa: BLE001 - an unreadable config leaves the run with its name only
        return {}


def read_run(run: Path, root: Path) -> dict:
    """{"run", "status", "error", "config": {...}, "results": {...}, "metrics": {...}}."""
    record = {"run": _rel(run, root), "status": UNFINISHED, "error": "", "config": {}, "results": {},
              "metrics": {}}
    complete = (run / rundir.COMPLETE).is_file() or (
        (run / "results.csv").is_file() and not (run / rundir.RUN_STATE).is_file())
    bench = benchmarks.of_folder(run)
    summary_file = run / bench.summary_file if bench else None
    missing = [f for f in REQUIRED if not (run / f).is_file()] + (
        [] if bench else [benchmarks.named(benchmarks.DEFAULT).summary_file])
    if complete and not missing:
        try:
            table = pd.read_csv(run / "results.csv")
            record["results"] = table.iloc[0].to_dict() if len(table) else {}
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            record["metrics"] = {k: v for k, v in summary.items() if isinstance(v, (int, float)) or v is None}
            retain = run / "retain" / summary_file.name  # the retain model's evaluation: a reference point
            if retain.is_file():
                record["results"] |= {f"{RETAIN_PREFIX}{k}": v for k, v in json.loads(retain.read_text()).items()
                                      if isinstance(v, (int, float))}
            record["status"] = FINISHED
        except Exception as e:  # noqa: BLE001 - a corrupt file is reported, never fails the whole table
            record["error"] = f"unreadable results ({type(e).__name__})"
    else:
        error = rundir.failure(run)
        if error is not None:
            record |= {"status": FAILED, "error": error}
        else:
            record["error"] = "missing " + ", ".join(missing + ([] if complete else ["COMPLETE"]))
    record["config"] = run_config(run, record["results"] or None)
    return record
