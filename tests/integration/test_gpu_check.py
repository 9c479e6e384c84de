"""scripts/gpu_check.py, run as a process: its CPU-shrunk mode (--tiny) runs the GPU check's code path end to end,
and without a GPU the check itself stops with a clear message."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=600)


def test_tiny_mode_runs_one_round_and_evaluation(tmp_path):
    out = tmp_path / "check.json"
    proc = _check("--tiny", "--split", "forget01", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["dtype"] == "bfloat16" and result["m"] == 2
    assert result["gradient_checkpointing"] is True
    assert set(result["times"]) == {"build_s", "round_s", "server_s", "client_s", "eval_s", "total_s"}
    assert result["within_time_limit"] and result["max_abs_update"] > 0  # the round moved the model
    assert set(result["metrics"]) >= {"forget_Q_A_Prob", "retain_Q_A_Prob"}
    assert "gpu_check: OK" in proc.stdout


def test_tiny_config_is_the_1b_family_shrunk():
    big, small = (json.loads(_check(*args, "--print-config").stdout) for args in ((), ("--tiny",)))
    assert (big["hidden_size"], big["intermediate_size"], big["num_hidden_layers"]) == (2048, 8192, 16)
    assert (big["num_attention_heads"], big["num_key_value_heads"], big["vocab_size"]) == (32, 8, 128256)
    assert small["hidden_size"] < big["hidden_size"] and small["num_hidden_layers"] < big["num_hidden_layers"]
    for c in (big, small):
        assert c["tie_word_embeddings"] and c["rope_parameters"]["rope_type"] == "llama3"
        assert c["num_attention_heads"] > c["num_key_value_heads"]  # GQA in both


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message only shows where there is no GPU")
@pytest.mark.integration
def test_without_cuda_the_check_says_so_and_exits_2():
    proc = _check()
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr and "--tiny" in proc.stderr
    sh = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], check=False, capture_output=True,
                        text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PY": sys.executable})
    assert sh.returncode == 2 and "no CUDA GPU" in sh.stderr
