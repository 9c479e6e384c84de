"""Sweep tables: grouping by what differs, duplicates, the clean baseline, paired statistics, failed and
unfinished runs, the mpu-report command and a real sweep with a failing job."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from helpers import write_run
from mpu_cli.run import seed_tag

REPO = Path(__file__).resolve().parents[2]


def _report_cmd():
    exe = REPO / ".venv" / "bin" / "mpu-report"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpu-report")
    return [found] if found else ["python", "-c", "import sys; from mpu_cli.cli.report import main; sys.exit(main())"]


@pytest.mark.integration
def test_mpu_report_names_failed_and_unfinished_runs(tmp_path):
    s = {"forget_Q_A_Prob": 0.2, "forget_Q_A_ROUGE": 0.4, "retain_Q_A_Prob": 0.8, "retain_Q_A_ROUGE": 0.7}
    write_run(tmp_path, "0_npo_clean", s, arm="clean")
    write_run(tmp_path, "1_npo_mpu", s | {"forget_Q_A_Prob": 0.3})
    write_run(tmp_path, "2_npo_noised", None, arm="noised", status="unfinished")  # killed before evaluation
    write_run(tmp_path, "3_npo_mpu_k1e6", None, kappa=1e6, status="failed")
    proc = subprocess.run([*_report_cmd(), str(tmp_path)], check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 finished run(s), 1 failed, 1 unfinished" in proc.stdout
    assert "unfinished: 2_npo_noised (missing results.csv, TOFU_SUMMARY.json, COMPLETE)" in proc.stdout
    assert "failed: 3_npo_mpu_k1e6: round 1/1 copy 1/2: the unlearning loss is nan" in proc.stdout

    table = pd.read_csv(tmp_path / "summary.csv").set_index("run")
    assert table.loc["2_npo_noised", "status"] == "unfinished" and table.loc["2_npo_noised", "arm"] == "noised"
    assert table.loc["3_npo_mpu_k1e6", "status"] == "failed"
    assert table.loc["1_npo_mpu", "deg_forget_Q_A_Prob"] == pytest.approx(0.5)
    md = (tmp_path / "summary.md").read_text()
    assert "## Failed runs" in md and "`3_npo_mpu_k1e6`: round 1/1 copy 1/2" in md
    assert "## Unfinished runs" in md and "`2_npo_noised`: missing results.csv" in md
    seed = seed_tag.tag(0, os.environ["MPU_CACHE_DIR"])  # the seed's public tag (run/seed_tag.py)
    assert f"| 1_npo_mpu | mpu | 0.1 | 2 | {seed} |" in md and "+50.00 %" in md
    assert (tmp_path / "paired.csv").stat().st_size > 0
    assert (tmp_path / "plot_forget_vs_utility.png").stat().st_size > 0


@pytest.mark.integration
def test_mpu_report_rejects_a_missing_folder(tmp_path):
    proc = subprocess.run([*_report_cmd(), str(tmp_path / "nope")], check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "is not an existing folder" in proc.stderr


def test_sweep_with_a_failing_job_still_writes_its_summary(mpu_run_cmd, tmp_path):
    """A real sweep: clean and MPU at κ = 0.1 and at κ = 1e6 (whose loss becomes NaN): the failing job stops
    without COMPLETE, the others finish, summary.md lists the failure, the command exits 1."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [*mpu_run_cmd, "-m", "algorithm=ga", "variant=clean,mpu_k0.1", "seed=0", "client.epochs=1",
         "data.split=forget01",
         "eval.metrics=quick", "eval.max_new_tokens=8", f"hydra.sweep.dir={sweep}"],
        check=False, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [*mpu_run_cmd, "-m", "algorithm=ga", "kappa=1e6", "seed=0", "client.epochs=1", "data.split=forget01",
         "eval.metrics=quick",
         f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=huge_kappa"],
        check=False, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 sweep job(s) failed" in proc.stderr and "Traceback" not in proc.stderr
    huge = sweep / "huge_kappa"
    assert not (huge / "COMPLETE").exists() and not (huge / "results.csv").exists()
    reason = (huge / "FAILED").read_text()
    assert "non-finite" in reason or "holds nan values" in reason, reason  # the loss or an updated weight
    table = pd.read_csv(sweep / "summary.csv").set_index("run")
    assert table.loc["huge_kappa", "status"] == "failed"
    finished = table[table.status == "finished"]
    assert sorted(finished.arm) == ["clean", "mpu"]
    mpu = finished[finished.arm == "mpu"].iloc[0]
    own = json.loads((sweep / mpu.name / "TOFU_SUMMARY.json").read_text())
    clean = json.loads((sweep / mpu.clean_run / "TOFU_SUMMARY.json").read_text())
    assert mpu.forget_Q_A_Prob == pytest.approx(own["forget_Q_A_Prob"])
    assert mpu.deg_forget_Q_A_Prob == pytest.approx(
        (own["forget_Q_A_Prob"] - clean["forget_Q_A_Prob"]) / clean["forget_Q_A_Prob"])
    md = (sweep / "summary.md").read_text()
    assert "## Failed runs" in md and "`huge_kappa`" in md and "1 seed: no interval" in md



def test_a_sweep_job_that_leaves_no_run_folder_is_listed_in_the_summary(mpu_run_cmd, tmp_path):
    """The job's folder holds a user's file, so the job refuses it and writes nothing there: still the sweep's
    summary.md lists it as failed with its line, as stderr says."""
    sweep = tmp_path / "sweep"
    (sweep / "blocked").mkdir(parents=True)
    (sweep / "blocked" / "notes.md").write_text("mine\n")
    proc = subprocess.run(
        [*mpu_run_cmd, "-m", "algorithm=ga", "seed=0", "data.split=forget01", "eval.metrics=quick",
         f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=blocked"],
        check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 sweep job(s) failed (listed in the sweep's summary.md)" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # nothing of the run is written into it (Hydra's job log aside)
    assert sorted(p.name for p in (sweep / "blocked").iterdir()) == ["mpu-run.log", "notes.md"]
    assert (sweep / "blocked" / "notes.md").read_text() == "mine\n"
    md = (sweep / "summary.md").read_text()
    assert "## Failed runs" in md and "`blocked`" in md and "is not an mpu-run run" in md, md
