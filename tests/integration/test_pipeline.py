"""End to end through the real CLI: prepare (cached), MPU rounds, evaluation, result files, a sweep."""
import json
import subprocess

import pandas as pd
import pytest

pytestmark = pytest.mark.integration  # real processes / the prepared models

FAST = ["eval.metrics=quick", "eval.max_new_tokens=24", "seed=0"]


def _run(cmd, *args, timeout=1800):
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_mpu_run_writes_every_output_and_forgets(mpu_run_cmd, tmp_path):
    out = tmp_path / "run"
    proc = _run(mpu_run_cmd, "algorithm=npo", "kappa=0.01", "m=2", *FAST, f"hydra.run.dir={out}")
    # the end of the run: the headline table target → unlearned with directions, the run directory, no library bars
    tail = proc.stdout.splitlines()[-8:]
    assert any(ln.startswith("mpu-run: done: npo · mpu κ=0.01 m=2 · seed-") for ln in tail), tail  # its tag
    assert any(ln.startswith("forget_Q_A_Prob") and "↓ lower" in ln for ln in tail), tail
    assert tail[-1].startswith(f"results: {out}")
    assert "Loading weights" not in proc.stdout + proc.stderr
    for f in (".hydra/config.yaml", ".hydra/overrides.yaml", "mpu-run.log", "TOFU_EVAL.json", "TOFU_SUMMARY.json",
              "target/TOFU_EVAL.json", "target/TOFU_SUMMARY.json", "results.csv", "server_public.json"):
        assert (out / f).exists(), f
    row = pd.read_csv(out / "results.csv")
    assert len(row) == 1
    row = row.iloc[0]
    assert (row.algorithm, row.arm, row.kappa, row.m) == ("npo", "mpu", 0.01, 2)
    # every configuration leaf is a column (what the reports group by), and the target's content hash
    config = json.loads((out / "run.json").read_text())["config"]
    assert row["client.lr"] == config["client"]["lr"] and row["server.alpha_schedule"] == "linear"
    assert row["algorithm.params.beta"] == config["algorithm"]["params"]["beta"]
    assert isinstance(row.target_hash, str) and len(row.target_hash) == 16
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    target = json.loads((out / "target" / "TOFU_SUMMARY.json").read_text())
    assert target["forget_Q_A_Prob"] >= 0.9  # the prepare stage trains the target until it knows D_f
    assert summary["forget_Q_A_Prob"] < target["forget_Q_A_Prob"]
    assert row.forget_Q_A_Prob == pytest.approx(summary["forget_Q_A_Prob"])
    public = json.loads((out / "server_public.json").read_text())
    assert public["m"] == 2 and 0 < public["exposed_fraction"] < 1


def test_multirun_sweep_writes_one_run_per_job(mpu_run_cmd, tmp_path):
    _run(mpu_run_cmd, "-m", "arm=clean,mpu", "algorithm=ga", "client.epochs=1", "data.split=forget01",
         "eval.max_new_tokens=8",
         "eval.metrics=quick", "seed=0", f"hydra.sweep.dir={tmp_path}")
    rows = pd.concat([pd.read_csv(p) for p in sorted(tmp_path.glob("*/results.csv"))])
    assert sorted(rows.arm) == ["clean", "mpu"]
    assert set(rows[rows.arm == "clean"].m) == {1}
