"""A resumed run uses the models it started with: a model file changed since the start is refused in one line
(exit 2) that names the file, and nothing of the run is touched."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration  # real mpu-run processes on the prepared models

FAST = ["data.split=forget01", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "m=2",
        "rounds=1", "seed=0", "model.retain=null"]


def _prepared_target() -> str:
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs
    from mpu_cli.models.prepare import prepare_models

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["data.split=forget01"])
    return prepare_models(cfg.model, cfg.data, cfg.prepare).target


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF
    path.write_bytes(bytes(data))


def _contents(out) -> dict:
    """Every file of the run folder: its content hash and modification time."""
    return {p.relative_to(out).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_resume_refuses_a_target_changed_since_the_run_started(mpu_run_cmd, tmp_path, name):
    target = tmp_path / "target"
    shutil.copytree(_prepared_target(), target)
    out = tmp_path / "run"
    args = [*mpu_run_cmd, *FAST, f"model.target={target}", f"hydra.run.dir={out}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, MPU_KILL_AT="after_prepare"))
    assert proc.returncode == -9, proc.stderr[-3000:]
    if name == "config.json":
        text = (target / name).read_text()
        (target / name).write_text(text.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 0.5'))
    else:
        _flip_a_byte(target / name)
    files = _contents(out)
    proc = subprocess.run([*args, "resume=true"], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, lines
    assert f"{target / name} (target model) changed since the run started" in lines[0]
    after = _contents(out)
    assert after == files, sorted(k for k in set(after) | set(files) if after.get(k) != files.get(k))
