"""MUSE end to end on the embedded MUSE-shaped corpus: real mpu-run processes (prepare the target and the
retrained model, unlearn, evaluate), clean and MPU; then mpu-eval of the prepared target."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


@pytest.fixture(scope="module")
def muse_runs(mpu_run_cmd, tmp_path_factory):
    root = tmp_path_factory.mktemp("muse")
    runs = {}
    for arm, extra in (("clean", []), ("mpu", ["kappa=0.01", "m=2"])):
        out = root / arm
        # the model's GradDiff preset (lr 3e-4, 5 epochs). Measured with open-unlearning's MUSE inputs on this
        # machine (clean, seed 0; target forget / retain knowmem 0.3125 / 0.3125): 3 epochs leave forget knowmem
        # at 0.3125; lr 6e-4 x 3 epochs takes it to 0.219 but retain to 0.25, the 80 % floor
        proc = subprocess.run([*mpu_run_cmd, "data=muse", "algorithm=graddiff", f"arm={arm}",
                               *extra, "seed=0", f"hydra.run.dir={out}"], env=ENV, capture_output=True, text=True,
                              timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[arm] = (out, proc.stdout)
    return runs


@pytest.mark.parametrize("arm", ["clean", "mpu"])
def test_unlearning_removes_forget_memorization_and_keeps_retain_knowledge(muse_runs, arm):
    out, stdout = muse_runs[arm]
    summary = json.loads((out / "MUSE_SUMMARY.json").read_text())
    target = json.loads((out / "target" / "MUSE_SUMMARY.json").read_text())
    retrained = json.loads((out / "retain" / "MUSE_SUMMARY.json").read_text())
    assert set(summary) == {"forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "mia_min_k",
                            "privleak", "extraction_strength"}
    # the target memorised the forget documents more than the model that never saw them ...
    assert target["forget_verbmem_ROUGE"] > retrained["forget_verbmem_ROUGE"]
    assert target["extraction_strength"] > retrained["extraction_strength"]
    # ... and unlearning takes some of it away. Not asked of extraction_strength: on whole continuations
    # (open-unlearning's cut) the tiny target reproduces at most their last tokens and most items sit at the 1/n
    # floor (target 0.0095, retrained 0.0083 on an AMD EPYC), where one more exact final token moves it up
    assert summary["forget_verbmem_ROUGE"] < target["forget_verbmem_ROUGE"]
    # the target knows the answers to questions about both corpora; the retrained model only the retain ones
    assert target["forget_knowmem_ROUGE"] > retrained["forget_knowmem_ROUGE"] + 0.2
    assert target["retain_knowmem_ROUGE"] > 0.2
    # unlearning takes forget knowledge away and keeps >= 80 % of the retain knowledge
    assert summary["forget_knowmem_ROUGE"] < target["forget_knowmem_ROUGE"]
    assert summary["retain_knowmem_ROUGE"] >= 0.8 * target["retain_knowmem_ROUGE"]
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["data.benchmark"] == "muse" and row["arm"] == arm
    assert row["target_forget_verbmem_ROUGE"] == pytest.approx(target["forget_verbmem_ROUGE"])
    assert "forget_verbmem_ROUGE" in stdout and "MUSE_SUMMARY.json" in stdout
    assert not (out / "TOFU_EVAL.json").exists()


def test_mpu_eval_on_muse(muse_runs, mpu_run_cmd, tmp_path):
    out, _ = muse_runs["clean"]
    mpu_eval = str(Path(mpu_run_cmd[0]).with_name("mpu-eval"))
    proc = subprocess.run([mpu_eval, "model_path=target", "data=muse", "eval.metrics=quick",
                           f"output_dir={tmp_path}"], env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((tmp_path / "MUSE_SUMMARY.json").read_text())
    target = json.loads((out / "target" / "MUSE_SUMMARY.json").read_text())
    assert set(got) == {"forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE"}
    assert got["forget_verbmem_ROUGE"] == pytest.approx(target["forget_verbmem_ROUGE"])


def test_bad_muse_input_is_one_line(mpu_run_cmd, tmp_path):
    proc = subprocess.run([*mpu_run_cmd, "data=muse", "data.split=forget05", f"hydra.run.dir={tmp_path / 'x'}"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "data.split='forget05' is not one of ['forget'] (data.benchmark=muse)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
