"""A run SIGKILLed at any stage and started again in the same run directory finishes with the same
TOFU_SUMMARY.json as an uninterrupted run (same seed); finished runs are not overwritten.

The kills come from MPU_KILL_AT=<point> (mpu_cli.faults): the process SIGKILLs itself there. One run directory is
killed at five points in turn (each resume gets further), then resumed to the end; an uninterrupted run with the
same seed runs alongside as the reference.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig
from mpu_cli.run.checkpoint import Checkpoint

pytestmark = pytest.mark.integration  # real processes / the prepared models

FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=2", "seed=0"]
# In order: each resumed run is killed further on. round1_copy2_mid: copy 1 of round 1 is finished and saved;
# the next resume must reuse it and redo only copy 2.
KILL_CHAIN = ["after_prepare", "round1_copy2_mid", "round1_before_aggregate", "round2_mid_aggregate",
              "final_eval_mid"]
TIMEOUT = 600


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPU_KILL_AT", None)
    env.pop("MPU_FAULT_INJECT", None)
    env.update(extra)
    return env


def _start(cmd, out: Path, *extra, env=None) -> subprocess.Popen:
    """Output goes to a file (a pipe nobody reads yet could fill up and stall the process)."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in _finish)
    proc = subprocess.Popen([*cmd, *FAST, f"hydra.run.dir={out}", *extra], stdout=log, stderr=subprocess.STDOUT,
                            text=True, env=env or _env())
    proc.log = log
    return proc


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    proc.wait(timeout=TIMEOUT)
    proc.log.seek(0)
    text = proc.log.read()
    proc.log.close()
    return proc.returncode, text


def _summary(out: Path) -> dict:
    return json.loads((out / "TOFU_SUMMARY.json").read_text())


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory, mpu_run_cmd):
    """(reference dir, resumed dir, {kill point: (rc, output, files after the kill)}, final (rc, output))."""
    root = tmp_path_factory.mktemp("faults")
    ref, run = root / "reference", root / "killed"
    reference = _start(mpu_run_cmd, ref)  # alongside the chain
    kills = {}
    for i, point in enumerate(KILL_CHAIN):
        rc, text = _finish(_start(mpu_run_cmd, run, *(["resume=true"] if i else []), env=_env(MPU_KILL_AT=point)))
        files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
        kills[point] = (rc, text, files)
    final = _finish(_start(mpu_run_cmd, run, "resume=true"))
    ref_result = _finish(reference)
    assert ref_result[0] == 0, ref_result[1][-3000:]
    return ref, run, kills, final


@pytest.mark.parametrize("point", KILL_CHAIN)
def test_killed_at_stage(fault_runs, point):
    _, _, kills, _ = fault_runs
    rc, text, files = kills[point]
    assert rc == -signal.SIGKILL, f"{point}: expected a SIGKILL, got rc={rc}\n{text[-3000:]}"
    # Nothing that looks finished: no completion marker, no final summary, no results row.
    assert "COMPLETE" not in files and "TOFU_SUMMARY.json" not in files and "results.csv" not in files, files
    assert "run.json" in files


def test_resumed_run_equals_uninterrupted(fault_runs):
    ref, run, _kills, (rc, text) = fault_runs
    assert rc == 0, text[-3000:]
    assert (run / "COMPLETE").exists()
    assert _summary(run) == _summary(ref)
    assert json.loads((run / "TOFU_EVAL.json").read_text()) == json.loads((ref / "TOFU_EVAL.json").read_text())
    # Checkpoints of finished rounds are cleaned up: only θ_R (and the noise measurement) remains; no temporary file.
    assert sorted(p.name for p in (run / "server_private").iterdir()) == [
        ".private", "models.json", "noise_survival.json", "state.json", "theta_r2.safetensors"]
    survival = json.loads((run / "server_private" / "noise_survival.json").read_text())["rounds"]
    assert survival == json.loads((ref / "server_private" / "noise_survival.json").read_text())["rounds"]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_finished_copies_are_not_redone(fault_runs):
    _, run, kills, _ = fault_runs
    _, text, files = kills["round1_copy2_mid"]
    assert "server_private/round_1/copy_0.json" in files  # copy 1 returned before the kill
    assert "server_private/round_1/copy_1.json" not in files
    _, text, _ = kills["round1_before_aggregate"]
    assert "round 1 copy 1/2: reusing the returned copy" in text
    assert "round 1 copy 2/2 unlearned" in text and "round 1 copy 1/2 unlearned" not in text
    st = json.loads((run / "server_private" / "state.json").read_text())
    assert st["pending"] is False and st["round"] == 2


def test_finished_run_is_not_overwritten(fault_runs, mpu_run_cmd):
    _, run, _, _ = fault_runs
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    rc, text = _finish(_start(mpu_run_cmd, run))
    assert rc == 2, text[-2000:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "already holds a finished run" in lines[0] and "overwrite=true" in lines[0], text
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_resume_with_another_config_is_refused(tmp_path, mpu_run_cmd):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"seed": 1}}))
    rc, text = _finish(_start(mpu_run_cmd, run, "resume=true"))
    assert rc == 2 and "cannot resume" in text and "another configuration" in text, text[-2000:]
    rc, text = _finish(_start(mpu_run_cmd, run))
    assert rc == 2 and "holds an unfinished run" in text and "resume=true" in text, text[-2000:]


# ---- the private state of a pending round, without subprocesses ---------------------------------------------------

CONFIG = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=32)


def test_unseeded_round_is_restored_from_private_state(tmp_path):
    """seed=None: the round's secrets come from `secrets`; the checkpoint keeps them (server_private only), so a
    restarted server regenerates the very same copies and aggregates the ones returned before the crash."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    theta = {n: t.detach().clone() for n, t in LlamaForCausalLM(CONFIG).state_dict().items()}
    layout = ModelLayout.from_hf_config(CONFIG)
    server = MPUServer(theta, layout, ServerConfig(kappa=0.05, m=3, seed=None))
    ckpt = Checkpoint(tmp_path)
    copies = server.publish()
    st = ckpt.published(server, None)
    returned = [{n: t + 0.01 * (k + 1) for n, t in c.items()} for k, c in enumerate(copies)]
    ckpt.save_returned(st, 0, returned[0])
    # "crash": a new server from the state on disk only
    st2 = ckpt.load()
    again = MPUServer.restore(dict(server.theta), ckpt.meta(st2), layout)
    assert again.pending and again.round == 1
    for a, b in zip(again.pending_copies(), copies):
        assert all(torch.equal(a[n], b[n]) for n in b)
    loaded = ckpt.load_returned(st2, 0)
    assert all(torch.equal(loaded[n], returned[0][n]) for n in loaded)
    assert ckpt.load_returned(st2, 1) is None
    want = server.aggregate(returned)
    got = again.aggregate([loaded, *returned[1:]])
    assert all(torch.equal(want[n], got[n]) for n in want)
    assert ckpt.store.round_secrets(1)["round_seed"] is not None
    assert "round_seed" not in json.loads(ckpt.state_path.read_text())  # the secrets: round_1.json only
    assert ckpt.state_path.parent.name == "server_private"


def _state_with_pending_round(tmp_path) -> Checkpoint:
    """A private state after round 1 was committed and round 2 published (θ_r1, round_2.json, state.json)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    theta = {n: t.detach().clone() for n, t in LlamaForCausalLM(CONFIG).state_dict().items()}
    server = MPUServer(theta, ModelLayout.from_hf_config(CONFIG), ServerConfig(kappa=0.05, m=2, seed=None))
    ckpt = Checkpoint(tmp_path)
    copies = server.publish()
    st = ckpt.published(server, None)
    server.aggregate(copies)
    st = ckpt.commit_round(server, st)
    server.publish()
    ckpt.published(server, st)
    return ckpt


def _theta_gone(ckpt):
    (ckpt.dir / json.loads(ckpt.state_path.read_text())["theta_file"]).unlink()


def _state_truncated(ckpt):
    ckpt.state_path.write_text(ckpt.state_path.read_text()[:40])


def _secrets_gone(ckpt):
    ckpt.store.round_secrets_path(2).unlink()


def _secrets_truncated(ckpt):
    path = ckpt.store.round_secrets_path(2)
    path.write_text(path.read_text()[:30])


@pytest.mark.parametrize("damage, names", [(_theta_gone, "theta_r1.safetensors"), (_state_truncated, "state.json"),
                                           (_secrets_gone, "round_2.json"), (_secrets_truncated, "round_2.json")])
def test_a_damaged_server_state_is_one_line_with_what_resume_can_do(tmp_path, damage, names):
    from mpu_cli.cli.run_app import _error_line
    from mpu_cli.run.server_state import DAMAGED_HINT, ServerStateError

    ckpt = _state_with_pending_round(tmp_path)
    assert ckpt.load()["pending"]
    damage(ckpt)
    with pytest.raises(ServerStateError) as e:
        ckpt.load()
    message, code = _error_line(e.value)  # how mpu-run reports it: exit 1, no traceback
    assert code == 1 and "\n" not in message and names in message and DAMAGED_HINT in message, message

    proc = subprocess.run([sys.executable, "-m", "mpu_cli.cli.server", "aggregate", "--state", str(ckpt.dir),
                           "--exchange", str(tmp_path / "exchange")],
                          capture_output=True, text=True, timeout=300, check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and err.count("\n") == 0, (proc.returncode, err)
    assert names in err and DAMAGED_HINT in err
