"""One server-state format: what the in-process run's checkpoint writes, mpu-server restores, and back."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig
from mpu_cli.run.checkpoint import Checkpoint
from mpu_cli.run.server_state import FORMAT, ServerState, ServerStateError

CONFIG = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=32)


@pytest.fixture
def server():
    torch.manual_seed(0)
    theta = {n: t.detach().clone() for n, t in LlamaForCausalLM(CONFIG).state_dict().items()}
    return MPUServer(theta, ModelLayout.from_hf_config(CONFIG), ServerConfig(kappa=0.05, m=2, seed=None))


def test_a_checkpointed_round_is_restored_by_mpu_server(server, tmp_path):
    from mpu_cli.transport import server as server_party

    ckpt = Checkpoint(tmp_path)
    copies = server.publish()
    ckpt.published(server, None)
    st = json.loads(ckpt.state_path.read_text())
    assert st["format"] == FORMAT == "mpu-server-state/1" and st["pending"] and st["round"] == 1
    assert "round_seed" not in st and "sigmas" not in st  # the secrets live in round_1.json only
    # mpu-server's own restore (θ_0: no θ file yet, so the caller's θ) gives back the very same copies
    st_mpu = st | {"theta_file": "theta_r0.safetensors"} | ServerState(ckpt.dir).write_theta(0, server.theta)
    again = server_party.restore(ckpt.dir, st_mpu, with_base=False)
    assert again.pending and again.round == 1
    for a, b in zip(again.pending_copies(), copies):
        assert all(torch.equal(a[n], b[n]) for n in b)


def test_commit_keeps_only_the_new_theta_and_no_secret(server, tmp_path):
    ckpt = Checkpoint(tmp_path)
    copies = server.publish()
    st = ckpt.published(server, None)
    server.aggregate([{n: t + 0.01 for n, t in c.items()} for c in copies])
    st = ckpt.commit_round(server, st)
    names = sorted(p.name for p in ckpt.dir.iterdir())
    assert names == [".private", "state.json", "theta_r1.safetensors"]  # round_1.json went with the commit
    theta = ServerState(ckpt.dir).theta(json.loads(ckpt.state_path.read_text()))
    assert all(torch.equal(theta[n], server.theta[n]) for n in theta)
    # owner only: 0700 folder, 0600 files, whatever the umask
    assert stat.S_IMODE(os.stat(ckpt.dir).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(ckpt.dir / n).st_mode) for n in names if n != ".private"} == {0o600}


def test_a_damaged_or_foreign_state_is_refused(server, tmp_path):
    ckpt = Checkpoint(tmp_path)
    copies = server.publish()
    st = ckpt.published(server, None)
    server.aggregate(copies)
    st = ckpt.commit_round(server, st)
    theta_file = ckpt.dir / st["theta_file"]
    data = bytearray(theta_file.read_bytes())
    data[-1] ^= 1
    theta_file.write_bytes(bytes(data))
    with pytest.raises(ServerStateError, match="does not match the SHA-256 recorded"):
        ServerState(ckpt.dir).theta(st)
    ckpt.state_path.write_text(json.dumps(st | {"format": "mpu-run-checkpoint/1"}))
    with pytest.raises(ServerStateError, match="expected 'mpu-server-state/1'"):
        ckpt.load()
