"""scripts/scale_1b.py, the GPU check's CPU twin, run as a process on the 1B shape shrunk to a tiny width: it drives
`mpu-run` with the server and client as separate processes, records each process's peak memory and renders the
stage table; and scripts/gpu_check.sh, without a GPU, says so and exits 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpu_cli.report.views import VIEWS

REPO = Path(__file__).resolve().parents[2]
SHAPE = "--hidden 64 --intermediate 128 --heads 4 --kv-heads 2 --max-shard-size 5MB"


def test_the_cpu_twin_runs_mpu_run_and_records_every_process_and_stage(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "scale_1b.py"), "--layers", "2", "--shape-args",
                           SHAPE, "--models", str(tmp_path / "models"), "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (out / "COMPLETE").is_file()
    record = json.loads((out / "scale.json").read_text())
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert (cfg["device"], cfg["transport"], cfg["m"], cfg["server"]["publish_dtype"]) == ("cpu", "files", 2,
                                                                                            "float32")
    assert cfg["model"]["base"].endswith("-base") and cfg["model"]["target"].endswith("-target")
    names = [p["process"] for p in record["processes"]]
    assert names[0] == "mpu-run" and {"mpu-server init", "mpu-server publish", "mpu-client unlearn",
                                      "mpu-server aggregate"} <= set(names)
    assert all(p["peak_rss_bytes"] > 50 * 2**20 for p in record["processes"])  # a python with torch loaded
    assert 5e6 < record["params"] < 2e7  # the tiny width with Llama-3's 128256-token vocabulary
    table = VIEWS["scale"].render(out)
    for stage in ("evaluation of the target", "mpu-server publish (round 1)", "mpu-client round 1 copy 2",
                  "mpu-server aggregate (round 1)", "evaluation of the unlearned model", "`mpu-client unlearn`"):
        assert stage in table
    assert table in proc.stdout


def test_the_view_names_what_it_reads(tmp_path):
    with pytest.raises(ValueError, match="scale.json"):
        VIEWS["scale"].render(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message only shows where there is no GPU")
def test_gpu_check_without_cuda_says_so_and_exits_2():
    sh = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], check=False, capture_output=True,
                        text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PY": sys.executable})
    assert sh.returncode == 2 and "no CUDA GPU" in sh.stderr and "scale_1b.py" in sh.stderr
