"""scripts/gpu_check.py, run as a process: its CPU-shrunk mode (--tiny) runs the GPU check's code path end to end,
and without a GPU the check itself stops with a clear message."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_gpu_check

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message only shows where there is no GPU")
@pytest.mark.integration
def test_without_cuda_the_check_says_so_and_exits_2():
    proc = run_gpu_check()
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr and "--tiny" in proc.stderr
    sh = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], check=False, capture_output=True,
                        text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PY": sys.executable})
    assert sh.returncode == 2 and "no CUDA GPU" in sh.stderr

