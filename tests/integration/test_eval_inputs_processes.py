"""mpu-eval's model_path: anything that is not a model we load is refused in one line (exit 2)."""
from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]



@pytest.mark.integration
def test_mpu_eval_on_a_pickle_is_one_line(tmp_path):
    f = tmp_path / "w.pkl"
    f.write_bytes(pickle.dumps([1, 2]))
    exe = REPO / ".venv" / "bin" / "mpu-eval"
    cmd = [str(exe)] if exe.exists() else ["python", "-c", "from mpu_cli.cli.eval import main; main()"]
    proc = subprocess.run([*cmd, f"model_path={f}", f"output_dir={tmp_path / 'out'}"], capture_output=True,
                          text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "is a file, not a model" in lines[0], proc.stderr[-2000:]

