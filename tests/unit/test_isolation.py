"""What the client process inherits and what the logs show: no model cache (it holds θ_0), no target path, no
seed; the server's private files are owner-only."""
from __future__ import annotations

import stat

from transformers import LlamaConfig

from mpu_cli.run.processes import SERVER_ONLY_ENV, shown, slot_envs
from mpu_cli.run.server_state import ServerState


def test_client_processes_do_not_inherit_the_model_cache():
    parent = {"PATH": "/bin", "MPU_CACHE_DIR": "/models/cache", "HF_HUB_OFFLINE": "1", "MPU_KILL_AT": "x"}
    for n in (1, 2):
        for env, _ in slot_envs(n, parent):
            assert not set(SERVER_ONLY_ENV) & set(env), n
            assert env["PATH"] == "/bin" and env["HF_HUB_OFFLINE"] == "1" and env["MPU_KILL_AT"] == "x"
    assert "MPU_CACHE_DIR" in SERVER_ONLY_ENV


def test_logged_command_lines_withhold_the_target_and_the_seed():
    line = shown(["mpu-server", "init", "--state", "/r/server_private", "--target", "/models/cache/target_ab12",
                  "--tokenizer", "/models/cache/target_ab12", "--base", "/models/base", "--seed", "1234", "--m", "2"])
    assert "/models/cache/target_ab12" not in line and "1234" not in line
    assert "--target (withheld)" in line and "--base /models/base" in line and "--m 2" in line


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_log_and_model_config_are_owner_only(tmp_path):
    store = ServerState(tmp_path / "server_private")
    store.log("init", 0, 1.5)
    store.log("publish", 1, 0.25)
    store.save_model_config(LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=16, vocab_size=32))
    log = store.dir / "log.jsonl"
    assert _mode(log) == 0o600 and len(log.read_text().splitlines()) == 2
    folder = store.dir / "model_config"
    assert _mode(store.dir) == 0o700 and _mode(folder) == 0o700
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files and all(_mode(p) == 0o600 for p in files)
