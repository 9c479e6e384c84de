"""The run directory is claimed — locked and marked — before anything is written into it, in mpu-run's first lines:
two processes on one directory never mix their files, whatever their timing and the machine's load; a run stopped
at any point resumes or starts over; overwrite removes only the run's own files; default names never collide;
SIGINT / SIGTERM are never lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from mpu_cli.run import rundir, runlock, seed_tag

pytestmark = pytest.mark.integration  # real mpu-run processes

FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=1"]


def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and "Loading weights" not in ln and "it/s]" not in ln]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MPU_KILL_AT", "MPU_KILL_SIGNAL", "MPU_FAULT_INJECT")}
    return env | extra


@pytest.fixture
def cpu_hog():
    """Every core busy with a spinning process (as other jobs on a shared machine would)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield
    for p in procs:
        p.kill()
        p.wait()


# ---- the lock: two processes on one run directory ------------------------------------------------------------

@pytest.mark.parametrize("delay", [0, 0.5, 1, 2, 4])
def test_two_runs_on_one_directory_under_load(mpu_run_cmd, tmp_path, cpu_hog, delay):
    """One proceeds and finishes, the other exits 2 without writing a byte: every file of the winner (.hydra/
    included) holds the winner's configuration."""
    configs = {"a": ["seed=0", "kappa=0.03"], "b": ["seed=1", "kappa=0.07"]}
    procs, started, ended = {}, {}, {}
    for name, args in configs.items():
        started[name] = time.perf_counter()
        procs[name] = subprocess.Popen([*mpu_run_cmd, *FAST, *args, "run_id=shared"], cwd=tmp_path, env=_env(),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if name == "a":
            time.sleep(delay)
    results = {}
    while len(results) < 2:
        for name, p in procs.items():
            if name not in results and p.poll() is not None:
                ended[name] = time.perf_counter()
                results[name] = (p.returncode, *p.communicate())
        time.sleep(0.05)
    codes = sorted(rc for rc, _, _ in results.values())
    assert codes == [0, 2], {n: (rc, err[-2000:]) for n, (rc, _, err) in results.items()}
    winner = next(n for n, (rc, _, _) in results.items() if rc == 0)
    loser = "b" if winner == "a" else "a"
    lines = _lines(results[loser][2])
    assert len(lines) == 1 and "is in use by another mpu-run process" in lines[0], lines
    print(f"lock test, delay {delay} s, CPU hog: winner {winner} {ended[winner] - started[winner]:.1f} s, "
                   f"loser {loser} refused after {ended[loser] - started[loser]:.2f} s", flush=True)
    assert ended[loser] - started[loser] < 15  # refused before Hydra and torch load (3 s on an idle machine)

    out = tmp_path / "outputs" / "runs" / "shared"
    # the seed is recorded as its tag (run/seed_tag.py): it tells the two runs apart as the seed would
    seed, kappa = (seed_tag.tag(configs[winner][0].split("=")[1], os.environ["MPU_CACHE_DIR"]),
                   float(configs[winner][1].split("=")[1]))
    hydra_cfg = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert (hydra_cfg.seed, hydra_cfg.kappa) == (seed, kappa)
    overrides = [f"seed={seed}", configs[winner][1]]
    assert set(OmegaConf.load(out / ".hydra" / "overrides.yaml")) >= set(overrides)
    assert OmegaConf.load(out / ".hydra" / "hydra.yaml").hydra.overrides.task == [*FAST, *overrides, "run_id=shared"]
    recorded = json.loads((out / "run.json").read_text())["config"]
    assert (recorded["seed"], recorded["kappa"]) == (seed, kappa)
    row = (out / "results.csv").read_text().splitlines()
    header, values = row[0].split(","), row[1].split(",")
    assert (values[header.index("seed")], float(values[header.index("kappa")])) == (seed, kappa)
    assert (out / runlock.LOCK).read_text().strip() == str(procs[winner].pid)
    assert (out / "COMPLETE").exists()
    # the loser's κ appears nowhere in the winner's files
    other = configs[loser][1].split("=")[1]
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".yaml", ".json", ".log", ".csv"):
            text = p.read_text(errors="replace")
            assert not any(f"kappa{sep}{other}" in text for sep in ("=", ": ", '": ')), p


def test_a_busy_directory_is_refused_before_the_configuration_is_read(mpu_run_cmd, tmp_path):
    """The refusal names the process holding it, not resume=true / overwrite=true (which it would refuse too)."""
    out = tmp_path / "run"
    rundir.lock(out)  # this test process holds it, as a live mpu-run would, with its run.json written
    (out / "run.json").write_text(json.dumps({"config": {"seed": 5}}))
    for extra in ([], ["resume=true"], ["overwrite=true"]):
        t = time.perf_counter()
        proc = subprocess.run(check=False, args=[*mpu_run_cmd, *FAST, *extra, f"hydra.run.dir={out}"], capture_output=True, text=True,
                              timeout=120, env=_env())
        took = time.perf_counter() - t
        lines = _lines(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "is in use by another mpu-run process" in lines[0] and "resume=true" not in lines[0], lines
        assert took < 3, f"{took:.1f} s"
        print(f"busy directory {extra}: refused after {took:.2f} s", flush=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([runlock.LOCK, runlock.MARKER, "run.json"])


def test_runs_started_together_get_their_own_time_stamped_directories(mpu_run_cmd, tmp_path):
    """Two runs with the same settings whose time-stamped names are the same (here a year's resolution, as two
    runs started in the same second get with the default name) are given two directories."""
    env = _env(MPU_KILL_AT="after_prepare")  # stop both once their directories are set up
    stamped = "hydra.run.dir=outputs/runs/${now:%Y}_" + "${seed}"
    procs = [subprocess.Popen([*mpu_run_cmd, *FAST, "seed=3", stamped], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=600)
    dirs = sorted((tmp_path / "outputs" / "runs").iterdir())
    year = time.strftime("%Y")
    assert [d.name for d in dirs] == [f"{year}_3", f"{year}_3-2"], [p.returncode for p in procs]
    for d in dirs:
        tag = seed_tag.tag(3, os.environ["MPU_CACHE_DIR"])
        assert OmegaConf.load(d / ".hydra" / "config.yaml").seed == tag
        assert json.loads((d / "run.json").read_text())["config"]["seed"] == tag


# ---- the marker: a run stopped anywhere resumes or starts over ------------------------------------------------

@pytest.mark.parametrize("rerun", ["resume=true", "overwrite=true", "run_id"])
def test_a_run_stopped_before_it_was_recorded_resumes_or_starts_over(mpu_run_cmd, tmp_path, rerun):
    if rerun == "run_id":
        where, again = ["run_id=early"], []
        out = tmp_path / "outputs" / "runs" / "early"
    else:
        out = tmp_path / "run"
        where, again = [f"hydra.run.dir={out}"], [rerun]
    proc = subprocess.run(check=False, args=[*mpu_run_cmd, *FAST, "seed=0", *where], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=_env(MPU_KILL_AT="before_start", MPU_KILL_SIGNAL="INT"))
    lines = _lines(proc.stderr)
    assert proc.returncode == 130 and len(lines) == 1 and "resume=true" in lines[0], proc.stderr[-2000:]
    assert not (out / "run.json").exists() and (out / runlock.MARKER).exists()
    proc = subprocess.run(check=False, args=[*mpu_run_cmd, *FAST, "seed=0", *where, *again], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "COMPLETE").exists() and (out / "run.json").exists()


def test_a_folder_with_a_results_csv_is_not_a_run_and_overwrite_keeps_it(mpu_run_cmd, tmp_path):
    out = tmp_path / "mine"
    mine = {"results.csv": "a,b\n1,2\n", "client/notes.txt": "c", "exchange/data.bin": "e", "logs/day1.log": "l"}
    for rel, text in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    for extra in ([], ["overwrite=true"]):
        proc = subprocess.run(check=False, args=[*mpu_run_cmd, *FAST, *extra, f"hydra.run.dir={out}"], capture_output=True, text=True,
                              timeout=120, env=_env())
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "is a folder that holds other files and is not an mpu-run run" in _lines(proc.stderr)[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(mine)
    for rel, text in mine.items():
        assert (out / rel).read_text() == text


def test_manifest_and_overwrite_keep_files_the_run_did_not_write(tmp_path):
    """A user's file added to an interrupted run is neither listed in MANIFEST.json when the resumed run finishes
    nor removed by overwrite=true; the run's own files are."""
    out = tmp_path / "run"
    run_files = ["run.json", "results.csv", "TOFU_EVAL.json", "target/TOFU_EVAL.json", "retain/TOFU_SUMMARY.json",
                 "model/model.safetensors", "model/config.json", "logs/server.log", "logs/client_r1_slot0.log",
                 "server_private/state.json", "exchange/round_1/round.json", "client/client.json",
                 "server_public.json", "FAILED"]
    user_files = ["notes.md", "target/mine.txt", "logs/keep.log", "model/weights.bin", "analysis/plot.png"]
    for rel in run_files + user_files + [".hydra/config.yaml", "mpu-run.log", runlock.MARKER]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    rundir.finish(out)
    listed = json.loads((out / rundir.MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(run_files + [rundir.MANIFEST, rundir.COMPLETE])
    rundir.remove_outputs(out)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == sorted(user_files + [".hydra/config.yaml", "mpu-run.log", runlock.MARKER])


# ---- signals -----------------------------------------------------------------------------------------------

def test_ctrl_c_while_starting_exits_130_in_one_line_and_gives_the_directory_back(mpu_run_cmd, tmp_path):
    out = tmp_path / "runs" / "x"
    proc = subprocess.Popen([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 30
    while not (out / runlock.LOCK).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)  # while it loads Hydra and torch
    _, stderr = proc.communicate(timeout=60)
    lines = _lines(stderr)
    assert proc.returncode == 130, stderr[-2000:]
    assert lines == ["mpu-run: error: interrupted (SIGINT) while starting; nothing was written"], stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # what the claim created is gone


@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_a_signal_reaching_a_child_as_it_forks_stops_the_run(mpu_run_cmd, tmp_path, sig):
    """transport=files: the signal reaches a child of mpu-run between fork and exec (where it still looks like
    mpu-run); it is mpu-run's, and the run stops with its code and the resume hint instead of finishing."""
    out = tmp_path / "run"
    proc = subprocess.run(check=False, args=[*mpu_run_cmd, *FAST, "seed=0", "transport=files", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, timeout=600,
                          env=_env(MPU_KILL_AT="fork", MPU_KILL_SIGNAL=sig))
    code = 128 + getattr(signal, f"SIG{sig}")
    lines = _lines(proc.stderr)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"mpu-run: error: interrupted (SIG{sig})") and \
        "resume=true" in lines[0], lines
    assert not (out / "COMPLETE").exists()
