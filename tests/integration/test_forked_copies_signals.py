"""Ctrl-C (SIGINT to the whole process group) or SIGTERM to mpu-run while forked workers unlearn copies
(runner.parallel_copies on the CPU): the run stops with one line and the resume hint, exit 130 / 143, no worker
prints a traceback or outlives it, and the resumed run finishes."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# copies long enough that a stop which waited for them to finish would show
FAST = ["data.split=forget01", "client.epochs=40", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=1", "seed=0", "model.retain=null", "runner.parallel_copies=2"]
PROGRESS = ("it/s]", "s/it]", "Loading weights")


def _forks(pid: int) -> list[int]:
    """The children of `pid` that are forks of it (the same command line)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid \
                    and (p / "cmdline").read_bytes() == cmdline:
                out.append(int(p.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_stop_signal_while_forked_workers_unlearn(mpu_run_cmd, tmp_path, sig, to_group):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("MPU_KILL_AT", "MPU_KILL_SIGNAL", "MPU_FAULT_INJECT")}
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}"], stdout=subprocess.DEVNULL,
                                stderr=err, env=env, start_new_session=True)
        deadline = time.time() + 600
        workers: list[int] = []
        while len(workers) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
            workers = _forks(proc.pid)
        assert len(workers) == 2, "the forked workers never started"
        time.sleep(1.0)  # inside the copies' unlearning
        sent = time.perf_counter()
        if to_group:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal reaches every process of the group
        else:
            os.kill(proc.pid, sig)
        rc = proc.wait(timeout=600)
        took = time.perf_counter() - sent
        err.seek(0)
        text = err.read()
    lines = [ln for ln in text.splitlines() if ln.strip() and not any(p in ln for p in PROGRESS)]
    assert rc == 128 + sig, (rc, text[-3000:])
    print(f"{signal.Signals(sig).name}: stopped {took:.1f} s after the signal", flush=True)
    assert took < 10, f"the run went on for {took:.0f} s after the signal (the copies in flight were waited for)"
    assert "Traceback" not in text and len(lines) == 1, text[-3000:]
    assert f"interrupted ({signal.Signals(sig).name})" in lines[0] and "resume=true" in lines[0], lines[0]
    time.sleep(0.5)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and
                "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    resumed = subprocess.run([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}", "resume=true"], capture_output=True,
                             text=True, env=env, timeout=900, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "COMPLETE").exists()
