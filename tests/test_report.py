"""Sweep tables and plots: relative degradation against the clean run, partial folders, the sweep callback."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mpu_cli.report.tables import collect, relative_degradation

REPO = Path(__file__).resolve().parents[1]


def _report_cmd():
    exe = REPO / ".venv" / "bin" / "mpu-report"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpu-report")
    return (
        [found]
        if found
        else ["python", "-c", "import sys; from mpu_cli.report.cli import main; sys.exit(main())"]
    )


def _write_run(root: Path, name: str, summary: dict | None, *, finished: bool = True, **config) -> Path:
    """A run folder as mpu-run writes it: .hydra/config.yaml, results.csv, TOFU_SUMMARY.json."""
    cfg = {
        "model": "tiny",
        "data": "embedded",
        "split": "forget10",
        "algorithm": "npo",
        "arm": "mpu",
        "kappa": 0.1,
        "m": 2,
        "rounds": 1,
        "epochs": 5,
        "lr": 3e-4,
        "seed": 0,
        "reference": "client_copy",
        "leaks_theta0": False,
        "params": "{}",
    } | config
    if cfg["arm"] == "clean":
        cfg["kappa"], cfg["m"] = 0.0, 1
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        f"model: {{name: {cfg['model']}}}\ndata: {{name: {cfg['data']}, split: {cfg['split']}}}\n"
        f"algorithm: {{name: {cfg['algorithm']}, params: {{}}}}\narm: {cfg['arm']}\nkappa: {cfg['kappa']}\n"
        f"m: {cfg['m']}\nrounds: 1\nseed: {cfg['seed']}\n"
        "client: {epochs: 5, lr: 0.0003, reference: client_copy}\n"
    )
    if finished:
        (run / "TOFU_SUMMARY.json").write_text(json.dumps(summary))
        # results.csv carries stale metric values: the table must read the run's own TOFU_SUMMARY.json.
        pd.DataFrame([cfg | {k: -1.0 for k in summary}]).to_csv(run / "results.csv", index=False)
    return run


def test_relative_degradation_is_signed_so_that_worse_is_positive():
    assert relative_degradation(0.25, 0.20, "lower") == pytest.approx(0.25)  # forgets less than clean
    assert relative_degradation(0.15, 0.20, "lower") == pytest.approx(-0.25)  # forgets more
    assert relative_degradation(0.45, 0.50, "higher") == pytest.approx(0.10)  # less utility
    assert relative_degradation(0.55, 0.50, "higher") == pytest.approx(-0.10)
    assert relative_degradation(-30.0, -20.0, "abs") == pytest.approx(0.5)  # privleak further from 0
    assert math.isnan(relative_degradation(0.3, 0.0, "lower"))
    assert math.isnan(relative_degradation(float("nan"), 0.2, "lower"))


def test_degradation_against_the_matching_clean_run(tmp_path):
    full = {"forget_Q_A_Prob": 0.20, "forget_Q_A_ROUGE": 0.40, "model_utility": 0.50, "privleak": -20.0}
    _write_run(tmp_path, "clean_s0", full, arm="clean")
    _write_run(
        tmp_path,
        "mpu_s0",
        {"forget_Q_A_Prob": 0.25, "forget_Q_A_ROUGE": 0.40, "model_utility": 0.45, "privleak": -30.0},
    )
    # two clean runs of seed 1 (e.g. one per swept kappa): the reference is their mean
    _write_run(
        tmp_path, "clean_s1_a", {"forget_Q_A_Prob": 0.10, "forget_Q_A_ROUGE": 0.30}, arm="clean", seed=1
    )
    _write_run(
        tmp_path, "clean_s1_b", {"forget_Q_A_Prob": 0.30, "forget_Q_A_ROUGE": 0.50}, arm="clean", seed=1
    )
    _write_run(
        tmp_path, "noised_s1", {"forget_Q_A_Prob": 0.30, "forget_Q_A_ROUGE": 0.36}, arm="noised", seed=1
    )
    _write_run(tmp_path, "mpu_s2", full, seed=2)  # no clean run with seed 2
    _write_run(tmp_path, "mpu_ga_s0", full, algorithm="ga")  # no clean ga run

    df = collect(tmp_path).table.set_index("run")
    assert len(df) == 7 and set(df.status) == {"finished"}
    assert df.loc["clean_s0", "forget_Q_A_Prob"] == pytest.approx(0.20)  # from TOFU_SUMMARY.json
    r = df.loc["mpu_s0"]
    assert r.deg_forget_Q_A_Prob == pytest.approx(0.25)
    assert r.deg_forget_Q_A_ROUGE == pytest.approx(0.0)
    assert r.deg_model_utility == pytest.approx(0.10)
    assert r.deg_privleak == pytest.approx(0.5)
    assert r.deg_avg == pytest.approx((0.25 + 0.0 + 0.10) / 3)
    assert r.deg_avg_over == "forget_Q_A_Prob, forget_Q_A_ROUGE, model_utility"
    assert r.clean_run == "clean_s0"

    r = df.loc[
        "noised_s1"
    ]  # quick metrics: no model_utility, clean = mean(0.1, 0.3) = 0.2 / mean(0.3, 0.5) = 0.4
    assert r.deg_forget_Q_A_Prob == pytest.approx(0.5)
    assert r.deg_forget_Q_A_ROUGE == pytest.approx(-0.1)
    assert math.isnan(r.deg_model_utility)
    assert r.deg_avg == pytest.approx(0.2)
    assert "model_utility not available" in r.deg_avg_over
    assert r.clean_run == "clean_s1_a; clean_s1_b"

    for run in ("mpu_s2", "mpu_ga_s0"):
        assert math.isnan(df.loc[run, "deg_avg"]) and df.loc[run, "clean_run"] == "(no clean run)"
    assert math.isnan(df.loc["clean_s0", "deg_avg"])


def test_mpu_report_on_a_partial_folder_names_the_unfinished_run(tmp_path):
    s = {"forget_Q_A_Prob": 0.2, "forget_Q_A_ROUGE": 0.4, "retain_Q_A_Prob": 0.8, "retain_Q_A_ROUGE": 0.7}
    _write_run(tmp_path, "0_npo_clean", s, arm="clean")
    _write_run(tmp_path, "1_npo_mpu", s | {"forget_Q_A_Prob": 0.3})
    _write_run(tmp_path, "2_npo_noised", None, arm="noised", finished=False)  # killed before evaluation
    proc = subprocess.run(
        [*_report_cmd(), str(tmp_path)], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 finished run(s), 1 unfinished" in proc.stdout
    assert "unfinished: 2_npo_noised (missing results.csv, TOFU_SUMMARY.json)" in proc.stdout

    table = pd.read_csv(tmp_path / "summary.csv").set_index("run")
    assert table.loc[["0_npo_clean", "1_npo_mpu"], "status"].tolist() == ["finished", "finished"]
    assert table.loc["2_npo_noised", "status"] == "unfinished"
    assert table.loc["2_npo_noised", "arm"] == "noised"  # config read from .hydra/config.yaml
    assert table.loc["1_npo_mpu", "deg_forget_Q_A_Prob"] == pytest.approx(0.5)
    md = (tmp_path / "summary.md").read_text()
    assert "## Unfinished runs" in md and "`2_npo_noised`: missing results.csv, TOFU_SUMMARY.json" in md
    assert "| 1_npo_mpu | npo | mpu |" in md and "+50.00%" in md
    assert (tmp_path / "plot_forget_vs_utility.png").stat().st_size > 0
    assert (tmp_path / "plot_kappa_forget_Q_A_Prob.png").stat().st_size > 0


def test_mpu_report_rejects_a_missing_folder(tmp_path):
    proc = subprocess.run(
        [*_report_cmd(), str(tmp_path / "nope")], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "is not an existing folder" in proc.stderr


def test_two_by_two_sweep_writes_the_summary_from_the_runs_own_summaries(mpu_run_cmd, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            *mpu_run_cmd,
            "-m",
            "algorithm=ga,npo",
            "arm=clean,mpu",
            "kappa=0.1",
            "m=2",
            "seed=0",
            "client.epochs=1",
            "eval.metrics=quick",
            "eval.max_new_tokens=8",
            f"hydra.sweep.dir={sweep}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/TOFU_SUMMARY.json"))
    assert len(runs) == 4
    table = pd.read_csv(sweep / "summary.csv")
    assert len(table) == 4 and set(table.status) == {"finished"}
    assert sorted(zip(table.algorithm, table.arm)) == [
        ("ga", "clean"),
        ("ga", "mpu"),
        ("npo", "clean"),
        ("npo", "mpu"),
    ]
    own = {p.name: json.loads((p / "TOFU_SUMMARY.json").read_text()) for p in runs}
    table = table.set_index("run")
    for alg in ("ga", "npo"):
        clean = table[(table.algorithm == alg) & (table.arm == "clean")].index[0]
        mpu = table[(table.algorithm == alg) & (table.arm == "mpu")].index[0]
        for metric in ("forget_Q_A_Prob", "forget_Q_A_ROUGE"):
            assert table.loc[mpu, metric] == pytest.approx(own[mpu][metric])
            c, r = own[clean][metric], own[mpu][metric]
            assert table.loc[mpu, f"deg_{metric}"] == pytest.approx((r - c) / abs(c))
        for metric in ("retain_Q_A_Prob", "retain_Q_A_ROUGE"):
            c, r = own[clean][metric], own[mpu][metric]
            assert table.loc[mpu, f"deg_{metric}"] == pytest.approx((c - r) / abs(c))
        expected = (
            (own[mpu]["forget_Q_A_Prob"] - own[clean]["forget_Q_A_Prob"]) / own[clean]["forget_Q_A_Prob"]
            + (own[mpu]["forget_Q_A_ROUGE"] - own[clean]["forget_Q_A_ROUGE"]) / own[clean]["forget_Q_A_ROUGE"]
        ) / 2
        assert table.loc[mpu, "deg_avg"] == pytest.approx(expected)
        assert "model_utility not available" in table.loc[mpu, "deg_avg_over"]
        assert table.loc[mpu, "clean_run"] == clean
        assert math.isnan(table.loc[clean, "deg_avg"])
    md = (sweep / "summary.md").read_text()
    for run in runs:
        assert f"| {run.name} |" in md
    assert (sweep / "plot_forget_vs_utility.png").exists()
    assert (sweep / "plot_kappa_forget_Q_A_Prob.png").exists()
