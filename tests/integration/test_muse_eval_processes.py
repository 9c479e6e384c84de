"""MUSE through `mpu-eval` processes: bad input refused in one line, before anything is evaluated."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpu_cli.models.tiny import SHIPPED_BASE

pytestmark = pytest.mark.integration  # starts mpu-eval processes on the shipped base

REPO = Path(__file__).resolve().parents[2]


def _mpu_eval(*args: str) -> subprocess.CompletedProcess:
    exe = REPO / ".venv" / "bin" / "mpu-eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from mpu_cli.cli.eval import main; main()"]
    return subprocess.run([*cmd, f"model_path={SHIPPED_BASE}", "data=muse", *args], capture_output=True, text=True,
                          check=False, timeout=300)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """Exit 2 with one error line (after the model-loading progress bar), no traceback: the line's text."""
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpu-eval: error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.rstrip().endswith(errors[0])
    return errors[0].removeprefix("mpu-eval: error: ")


def test_mpu_eval_refuses_a_200_000_character_prompt_before_evaluating(tmp_path):
    from mpu_cli.data.muse import embedded_dir

    data = tmp_path / "muse"
    shutil.copytree(embedded_dir(), data)
    rows = [json.loads(line) for line in (data / "verbmem" / "forget.jsonl").read_text().splitlines()]
    rows[3]["prompt"] = "The flood " * 20_000  # 200 000 characters
    (data / "verbmem" / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = _mpu_eval(f"data.source={data}", f"output_dir={tmp_path / 'out'}")
    error = _error_line(proc)
    assert error.startswith("MUSE verbmem/forget row 4: its prompt is ")
    assert error.endswith("tokens, which with 128 new tokens exceeds the model's 256 positions; accepted: prompts of "
                          "at most 128 tokens")
    assert not (tmp_path / "out" / "MUSE_EVAL.json").exists()


def test_mpu_eval_refuses_a_tofu_retain_log_for_muse(tmp_path):
    log = tmp_path / "TOFU_EVAL.json"
    log.write_text(json.dumps({"forget_Q_A_Prob": {"agg_value": 0.04}, "mia_min_k": {"agg_value": 0.13}}))
    proc = _mpu_eval(f"retain_logs_path={log}", f"output_dir={tmp_path / 'out'}")
    assert _error_line(proc).startswith(f"retain_logs_path={str(log)!r}: retain reference {log} is not a MUSE "
                                        "evaluation")
