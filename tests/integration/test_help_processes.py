"""Every command's --help describes it and its main keys; every group of mpu-run's help works as group=option."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import RUN_ONLY_GROUPS, group_lines


def _hydra_help(command: str, *args: str) -> str:
    code = {"mpu-run": "from mpu_cli.cli.run import run_main as m; m()",
            "mpu-eval": "from mpu_cli.cli.eval import main as m; m()"}[command]
    proc = subprocess.run([sys.executable, "-c", code, *args, "--help"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.integration
def test_mpu_run_help_is_ours():
    text = _hydra_help("mpu-run")
    assert text.startswith("mpu-run: one MPU unlearning experiment")
    assert "powered by Hydra" not in text and "== Config ==" not in text
    assert set(group_lines(text)) == {"model", "data", "algorithm", *RUN_ONLY_GROUPS}
    for key in ("kappa=0.01", "m=2", "arm=mpu", "client.lr", "$MPU_CACHE_DIR"):
        assert key in text, key
    assert "a sweep" in _hydra_help("mpu-run", "--config-name", "reproduce_tiny")  # presets keep the help


@pytest.mark.integration
def test_mpu_eval_help_lists_only_its_groups():
    text = _hydra_help("mpu-eval")
    assert text.startswith("mpu-eval: the TOFU evaluation of one saved model")
    assert group_lines(text) == ["model", "data"]
    assert "model_path (required)" in text and "retain_logs_path=null" in text
    for group in RUN_ONLY_GROUPS:
        assert f"  {group} " not in text and f"{group}=" not in text

