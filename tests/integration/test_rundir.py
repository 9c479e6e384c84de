"""The run directory and the cache cannot be corrupted: one process per run directory, foreign folders refused,
overwrite removes only the run's own files, damaged cache entries rebuilt, stale builds removed, private state
owner-only, and SIGINT / SIGTERM stop with one line and a resume hint."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mpu_cli.run import rundir, runlock

FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=1", "seed=0"]


def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and "Loading weights" not in ln and "it/s]" not in ln]


# ---- integration: real mpu-run processes ----------------------------------------------------------------------

def test_a_second_process_on_the_same_run_directory_exits_at_once(mpu_run_cmd, tmp_path):
    out = tmp_path / "run"
    rundir.lock(out)  # this test process holds the directory, as a running mpu-run would
    t = time.perf_counter()
    proc = subprocess.run([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert time.perf_counter() - t < 3  # refused in mpu-run's first lines, before Hydra and torch are loaded
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and "is in use by another mpu-run process" in lines[0] and str(os.getpid()) in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [runlock.MARKER, runlock.LOCK]  # Hydra never wrote .hydra/


def test_a_folder_of_other_files_is_refused(mpu_run_cmd, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "TOFU_SUMMARY.json").write_text('{"mine": 1}')
    proc = subprocess.run([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "is a folder that holds other files and is not an mpu-run run" in _lines(proc.stderr)[0]
    assert sorted(p.name for p in out.iterdir()) == ["TOFU_SUMMARY.json"]
    assert (out / "TOFU_SUMMARY.json").read_text() == '{"mine": 1}'


@pytest.fixture(scope="module")
def finished_run(mpu_run_cmd, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = subprocess.run([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_overwrite_removes_only_what_the_run_wrote(mpu_run_cmd, finished_run):
    manifest = json.loads((finished_run / rundir.MANIFEST).read_text())["files"]
    assert "results.csv" in manifest and "target/TOFU_EVAL.json" in manifest and "COMPLETE" in manifest
    mine = {"logs/keep.log": "keep", "model/weights.bin": "w", "target/mine.txt": "t", "notes.md": "n"}
    for rel, text in mine.items():
        (finished_run / rel).parent.mkdir(parents=True, exist_ok=True)
        (finished_run / rel).write_text(text)
    proc = subprocess.run([*mpu_run_cmd, *FAST, "overwrite=true", f"hydra.run.dir={finished_run}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel, text in mine.items():
        assert (finished_run / rel).read_text() == text, rel
    assert (finished_run / "COMPLETE").exists()


def test_private_state_is_owner_only_and_outputs_honour_the_umask(finished_run):
    private = finished_run / "server_private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    for f in private.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    umask = os.umask(0)
    os.umask(umask)
    for rel in ("TOFU_EVAL.json", "TOFU_SUMMARY.json", "results.csv", "target/TOFU_EVAL.json", "run.json"):
        assert stat.S_IMODE((finished_run / rel).stat().st_mode) == 0o666 & ~umask, rel


@pytest.mark.parametrize(("sig", "code"), [("INT", 130), ("TERM", 143)])
def test_a_signal_stops_the_run_with_one_line_and_resume_finishes_it(mpu_run_cmd, tmp_path, sig, code):
    out = tmp_path / "run"
    env = dict(os.environ, MPU_KILL_AT="round1_copy2_mid", MPU_KILL_SIGNAL=sig)
    proc = subprocess.run([*mpu_run_cmd, *FAST, f"hydra.run.dir={out}"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == code, proc.stderr[-3000:]
    lines = _lines(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"mpu-run: error: interrupted (SIG{sig}) at round 1/1: the client unlearning copy 2/2")
    assert "resume=true" in lines[0]
    assert not (out / "COMPLETE").exists() and (out / rundir.MANIFEST).exists()
    if sig != "INT":
        return  # both signals stop through one handler: resuming once (after SIGINT) covers the resume
    env.pop("MPU_KILL_AT")
    proc = subprocess.run([*mpu_run_cmd, *FAST, "resume=true", f"hydra.run.dir={out}"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "COMPLETE").exists()


def test_an_unwritable_cache_is_refused_before_any_training(mpu_run_cmd, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: a file where the folder should be is unwritable for all
        cache = tmp_path / "cache"
        cache.write_text("not a folder")
    else:
        cache = tmp_path / "ro"
        cache.mkdir(mode=0o500)
    t = time.perf_counter()
    proc = subprocess.run([*mpu_run_cmd, *FAST, f"prepare.cache_dir={cache / 'sub'}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and "prepare.cache_dir=" in lines[0] and "is not writable" in lines[0], lines
    assert time.perf_counter() - t < 60


# ---- unit: the cache of prepared models ---------------------------------------------------------------------

def _fake_build(calls: list):
    def build(out: Path) -> dict:
        import torch
        from safetensors.torch import save_file

        calls.append(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.arange(64, dtype=torch.float32)}, str(out / "model.safetensors"))
        return {"epochs": 1}
    return build


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, caplog):
    from mpu_cli.models.prepare import _cached

    calls: list = []
    entry = Path(_cached(tmp_path, "target", {"k": 1}, _fake_build(calls)))
    assert len(calls) == 1 and json.loads((entry / "COMPLETE").read_text())["files"]["model.safetensors"]
    assert _cached(tmp_path, "target", {"k": 1}, _fake_build(calls)) == str(entry) and len(calls) == 1  # reused
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-40:-20] = bytes(20)  # half a tensor changed in place: the file still loads
    weights.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        assert _cached(tmp_path, "target", {"k": 1}, _fake_build(calls)) == str(entry)
    assert len(calls) == 2 and "is damaged" in caplog.text and "rebuilding" in caplog.text
    from mpu_cli.cache import damaged

    assert damaged(entry) is None


def test_temporary_folders_of_killed_builds_are_removed(tmp_path):
    from mpu_cli.models.prepare import _cached

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".base-abc.tmp{dead.pid}"
    stale.mkdir()
    (stale / "half.safetensors").write_bytes(b"x")
    live = tmp_path / f".base-def.tmp{os.getpid()}"
    live.mkdir()
    _cached(tmp_path, "target", {"k": 2}, _fake_build([]))
    assert not stale.exists() and live.exists()


@pytest.mark.integration
def test_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path):
    out = tmp_path / "run"
    rundir.lock(out)
    rundir.lock(out)  # the same process again: fine
    code = ("import sys; from pathlib import Path; from mpu_cli.run import rundir\n"
            "try:\n    rundir.lock(Path(sys.argv[1]))\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
    proc = subprocess.run(["python3" if not Path(".venv/bin/python").exists() else ".venv/bin/python", "-c", code,
                           str(out)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 3 and "in use by another mpu-run process" in proc.stdout


def test_a_killed_client_is_named_by_its_signal(tmp_path):
    from mpu_cli.run.processes import _check
    from mpu_cli.transport.errors import TransportError

    log = tmp_path / "client.log"
    log.write_text("mpu-client: round 1 copy 0 returned (3.1s)\n")  # its last line is a success
    with pytest.raises(TransportError, match=r"mpu-client was killed by SIGKILL .*resume=true") as e:
        _check("mpu-client", -9, log)
    assert "returned" not in str(e.value).split("(log")[0]


def test_an_unwritable_run_directory_is_refused_in_one_line(tmp_path):
    from mpu_cli.config import ConfigError

    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the outputs folder should be")  # unwritable for every user, root included
    with pytest.raises(ConfigError, match="cannot be written") as e:
        rundir.lock(blocker / "runs" / "x")
    assert "\n" not in str(e.value)


def test_saved_models_honour_the_umask_and_stay_private_in_the_server_folder(tmp_path):
    """safetensors writes its files 0600; a saved model (cache entry, a run's model/) follows the umask like
    every other output, and stays 0600 inside the server's private folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mpu_cli.files import make_private
    from mpu_cli.models.io import save_model

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    old = os.umask(0o022)
    try:
        save_model(model, None, tmp_path / "cache" / "entry")
        save_model(model, None, make_private(tmp_path / "private") / "theta")
    finally:
        os.umask(old)
    files = list((tmp_path / "cache" / "entry").iterdir())
    assert any(f.suffix == ".safetensors" for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    for f in (tmp_path / "private" / "theta").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


# ---- unit: claiming a run directory -------------------------------------------------------------------------

def test_the_directory_named_on_the_command_line_is_the_one_hydra_composes(tmp_path):
    """mpu-run claims `run_id=` / `hydra.run.dir=` before Hydra is loaded: the same folder the configuration names."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mpu_cli.cli.run import ROOT_CONFIG
    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        for argv in (["run_id=abc", "seed=1"], [f"hydra.run.dir={tmp_path / 'x'}", "kappa=0.1"]):
            composed = OmegaConf.select(compose("config", overrides=argv, return_hydra_config=True), "hydra.run.dir")
            assert runlock.named_dir(argv, ROOT_CONFIG) == Path(composed), argv
    for argv in (["-m", "run_id=abc"], ["--config-name", "reproduce_tiny", "run_id=a"], ["seed=1"],
                 ["hydra.run.dir=outputs/${now:%Y}"], ["run_id=a,b"]):
        assert runlock.named_dir(argv, ROOT_CONFIG) is None, argv


def test_a_claim_given_back_unused_leaves_nothing(tmp_path):
    out = runlock.claim(tmp_path / "a" / "b" / "run")
    assert sorted(p.name for p in out.iterdir()) == [runlock.MARKER, runlock.LOCK] and runlock.made_here(out)
    runlock.release_unused()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    lock = tmp_path / "kept" / runlock.LOCK
    lock.write_text("123\n")  # the lock file of an earlier run stays as it was
    os.utime(lock, ns=(10**18, 10**18))
    runlock.claim(tmp_path / "kept")
    assert lock.read_text() == f"{os.getpid()}\n"
    runlock.release_unused()
    assert [p.name for p in (tmp_path / "kept").iterdir()] == [runlock.LOCK]
    assert lock.read_text() == "123\n" and lock.stat().st_mtime_ns == 10**18


def test_a_time_stamped_name_that_is_taken_gets_a_free_one(tmp_path):
    (tmp_path / "2026_npo").mkdir()
    assert runlock.claim(tmp_path / "2026_npo", unique=True) == (tmp_path / "2026_npo-2").resolve()
    assert runlock.claim(tmp_path / "2026_npo", unique=True) == (tmp_path / "2026_npo-3").resolve()
    assert list((tmp_path / "2026_npo").iterdir()) == []  # the taken one is not touched
    runlock.release_unused()
