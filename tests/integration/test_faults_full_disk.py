"""A full disk at every writing stage of a run: each stops the run with one line (exit 1, a fault) that says to free space
and resume, nothing half-written is left, and the run resumed after the last of them ends with the same
TOFU_SUMMARY.json as an uninterrupted run. A full disk while a model is built into the cache leaves no half
cache entry.

The disk fills through MPU_FAULT_INJECT=<op>@<output>:ENOSPC (mpu_cli.faults): only the writes of that output
fail. One run directory meets the stages in the order the run writes them, each resume getting one stage further.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=1", "seed=0", "model.retain=null"]
RUN = "full"  # the run folder's name: its top-level outputs are named through it
# Every output an in-process run writes, in the order it first writes them.
STAGES = [
    "atomic_write@run.json", "atomic_write@server_private/models.json", "atomic_write@target/TOFU_EVAL.json",
    "atomic_write@target/TOFU_SUMMARY.json", f"atomic_write@{RUN}/server_public.json",
    "atomic_write@server_private/round_1.json", "atomic_write@server_private/state.json",
    "atomic_write@server_private/noise_survival.json", "save_tensors@server_private/round_1/copy_0.safetensors",
    "atomic_write@server_private/round_1/copy_1.json", "save_tensors@server_private/theta_r1.safetensors",
    f"atomic_write@{RUN}/TOFU_EVAL.json", f"atomic_write@{RUN}/TOFU_SUMMARY.json", f"atomic_write@{RUN}/results.csv",
    f"atomic_write@{RUN}/MANIFEST.json", f"atomic_write@{RUN}/COMPLETE",
]
PROGRESS = ("it/s]", "s/it]", "Loading weights")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MPU_KILL_AT", "MPU_KILL_SIGNAL", "MPU_FAULT_INJECT")}
    return env | {"OMP_NUM_THREADS": "1"} | extra


def _output(stage: str) -> str:
    """The file a stage writes, relative to the run folder."""
    return stage.partition("@")[2].removeprefix(f"{RUN}/")


def _run(cmd, out: Path, *extra, env=None) -> tuple[int, str]:
    with tempfile.TemporaryFile(mode="w+") as err:  # a pipe nobody reads could fill up and stall the run
        proc = subprocess.run([*cmd, *FAST, f"hydra.run.dir={out}", *extra], stdout=subprocess.DEVNULL, stderr=err,
                              env=env or _env(), timeout=900, check=False)
        err.seek(0)
        return proc.returncode, err.read()


@pytest.fixture(scope="module")
def chain(mpu_run_cmd, tmp_path_factory):
    root = tmp_path_factory.mktemp("full_disk")
    ref, run = root / "reference", root / RUN
    reference = subprocess.Popen([*mpu_run_cmd, *FAST, f"hydra.run.dir={ref}"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=_env())
    stops = {}
    for i, stage in enumerate(STAGES):
        target = run / _output(stage)
        before = target.stat().st_mtime_ns if target.exists() else None  # (MANIFEST.json: kept by each failure)
        rc, err = _run(mpu_run_cmd, run, *(["resume=true"] if i else []),
                       env=_env(MPU_FAULT_INJECT=f"{stage}:ENOSPC"))
        after = target.stat().st_mtime_ns if target.exists() else None
        stops[stage] = (rc, err, sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()),
                        before == after)
    final = _run(mpu_run_cmd, run, "resume=true")
    assert reference.wait(timeout=900) == 0
    return ref, run, stops, final


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_stops_the_run_with_one_line(chain, stage):
    _, _, stops, _ = chain
    rc, err, files, untouched = stops[stage]
    lines = [ln for ln in err.splitlines() if ln.strip() and not any(p in ln for p in PROGRESS)]
    assert rc == 1, f"{stage}: rc={rc}\n{err[-3000:]}"  # a fault (bad input would be 2)
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("mpu-run: error: cannot write") and "No space left on device" in lines[0], lines
    assert "resume=true" in lines[0], lines[0]
    assert untouched, f"{_output(stage)} was written although its disk was full"
    assert "COMPLETE" not in files and not [f for f in files if f.endswith(".tmp")], files


def test_the_run_resumed_after_every_full_disk_equals_an_uninterrupted_one(chain):
    ref, run, _, (rc, err) = chain
    assert rc == 0, err[-3000:]
    assert (run / "COMPLETE").exists() and not (run / "FAILED").exists()
    for name in ("TOFU_SUMMARY.json", "TOFU_EVAL.json"):
        assert json.loads((run / name).read_text()) == json.loads((ref / name).read_text()), name


def test_a_full_disk_while_building_a_cached_model_leaves_no_half_entry(mpu_run_cmd, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    rc, err = _run(mpu_run_cmd, out, f"prepare.cache_dir={cache}", "prepare.base_epochs=1",
                   env=_env(MPU_FAULT_INJECT="save_model:ENOSPC"))
    lines = [ln for ln in err.splitlines() if ln.strip() and not any(p in ln for p in PROGRESS)]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "No space left on device" in lines[0] and "resume=true" in lines[0], lines[0]
    left = sorted(p.name for p in cache.iterdir())
    assert not [n for n in left if n.startswith(("base-", "target-")) or ".tmp" in n], left
