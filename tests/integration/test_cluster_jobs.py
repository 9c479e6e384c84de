"""Copies as cluster jobs (`runner.launcher=submitit`) through submitit's local executor: real job processes,
submitted, watched and reported by the same code as on SLURM.

An uninterrupted run of copy jobs equals the in-process runner bit for bit (which the file transport equals too:
test_transport.py). A run whose copy job is cancelled (what `job.cancel()` / scancel does) fails with that job's
id and log; its resume resubmits only that copy and ends exactly where the uninterrupted run did. The reference
run is in process (the cheapest uninterrupted run with the same seed).
"""
import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mpu_cli.transport import exchange as ex

pytestmark = pytest.mark.integration
FAST = ["client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "data.split=forget01", "seed=0",
        "save_model=true", "algorithm=npo", "kappa=0.01", "m=2"]
JOBS = ["launcher=submitit_local", "runner.submitit.poll_s=0.5"]
# one torch thread everywhere: the thread count changes CPU reduction order, and the runs are compared bitwise
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def _args(cmd, out: Path, *extra) -> list[str]:
    return [*cmd, *FAST, *extra, f"hydra.run.dir={out}"]


def _run(cmd, out: Path, *extra) -> Path:
    proc = subprocess.run(_args(cmd, out, *extra), check=False, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _records(out: Path) -> list[dict]:
    """RUN/logs/jobs.jsonl (read while mpu-run appends to it: only whole lines)."""
    path = out / "logs" / "jobs.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(ln) for ln in text.splitlines(keepends=True) if ln.endswith("\n")]


def _same_result(run: Path, reference: Path) -> None:
    assert json.loads((run / "TOFU_SUMMARY.json").read_text()) == json.loads((reference / "TOFU_SUMMARY.json").read_text())
    a, b = load_file(str(run / "model" / "model.safetensors")), load_file(str(reference / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[n] == b[n]).all() for n in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mpu_run_cmd):
    """The same run in process (server and client as function calls), uninterrupted."""
    return _run(mpu_run_cmd, tmp_path_factory.mktemp("inprocess") / "run")


@pytest.fixture(scope="module")
def job_run(tmp_path_factory, mpu_run_cmd):
    return _run(mpu_run_cmd, tmp_path_factory.mktemp("jobs") / "run", *JOBS)


def test_a_round_of_copy_jobs_equals_the_in_process_run(job_run, reference):
    _same_result(job_run, reference)
    records = _records(job_run)
    assert [(e["round"], e["copy"]) for e in records] == [(1, 0), (1, 1)]
    for e in records:
        text = Path(e["log"]).read_text()
        assert f"--round 1 --copy {e['copy']}" in text and f"round 1 copy {e['copy']} returned" in text
        # what was submitted: the client's command line, naming no secret and nothing of the server's
        pkl = Path(e["log"]).parent / f"{e['job_id']}_submitted.pkl"
        raw = pkl.read_bytes()
        assert os.environ["MPU_CACHE_DIR"].encode() not in raw and b"server_private" not in raw
        command = pickle.loads(raw).function.command
        assert "unlearn" in command and "--exchange" in command and "--seed" not in command


def _wait_for(find, timeout: float = 300):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = find()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_cancelled_copy_job_fails_the_run_and_resume_resubmits_only_that_copy(tmp_path, mpu_run_cmd, reference):
    out = tmp_path / "run"
    with open(tmp_path / "stderr", "w") as err, open(tmp_path / "stdout", "w") as so:
        proc = subprocess.Popen(_args(mpu_run_cmd, out, *JOBS), stdout=so, stderr=err, env=ENV)
        try:
            job = _wait_for(lambda: next((e for e in _records(out) if e["copy"] == 1), None))
            pid = int(job["job_id"])  # the local executor's job id is its controller's process id
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"SUBMITIT_EXECUTOR=local" in environ  # (the job's process indeed)
            assert not [v for v in environ if v.startswith(b"MPU_CACHE_DIR=")]  # θ_0's cache is the server's
            os.kill(pid, signal.SIGINT)  # = LocalJob.cancel(), the local executor's scancel
            rc = proc.wait(timeout=600)
        finally:
            proc.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert rc == 1, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("mpu-run: error:")]
    assert len(lines) == 1, stderr[-3000:]
    assert f"round 1 copy 1: job {pid} ended" in lines[0] and f"(log: {job['log']})" in lines[0]
    assert "resume=true" in lines[0] and "copy 0" not in lines[0]
    assert ex.is_returned(out / "exchange", 1, 0) and not ex.is_returned(out / "exchange", 1, 1)

    _run(mpu_run_cmd, out, *JOBS, "resume=true")
    assert [(e["round"], e["copy"]) for e in _records(out)] == [(1, 0), (1, 1), (1, 1)]  # only copy 1 again
    _same_result(out, reference)  # = the uninterrupted run (in process; the uninterrupted jobs' run equals it too)


def test_a_failed_client_is_reported_with_its_own_error_line(tmp_path):
    """A copy job whose client exits with an error: the run's line names the job, its state, the client's error
    and the log."""
    import sys

    from omegaconf import OmegaConf

    from mpu_cli.config import SubmititSettings
    from mpu_cli.run.copy_job import ClientJob
    from mpu_cli.run.jobs import JobRounds, executor

    settings = OmegaConf.structured(SubmititSettings(cluster="local"))
    failing = [sys.executable, "-c", "import sys; print('mpu-client: error: --copy 7 is not a copy of round 1', "
               "file=sys.stderr); sys.exit(2)"]
    job = executor(settings, tmp_path / "jobs").submit(ClientJob(failing))
    _wait_for(job.done, timeout=120)
    line = JobRounds._failure(1, 7, job)
    assert line == (f"round 1 copy 7: job {job.job_id} ended ({job.state}) without returning its copy: "
                    f"mpu-client: error: --copy 7 is not a copy of round 1 (log: {job.paths.stdout})")
    assert "\n" not in line
