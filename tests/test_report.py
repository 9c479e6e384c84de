"""Sweep tables: grouping by what differs, duplicates, the clean baseline, paired statistics, failed and
unfinished runs, the mpu-report command and a real sweep with a failing job."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy import stats

from mpu_cli.run import rundir
from mpu_cli.config import MPUConfig
from mpu_cli.report.stats import ONE_SEED, paper_criterion, t_interval, verdict
from mpu_cli.report.tables import collect, relative_degradation

REPO = Path(__file__).resolve().parents[1]


def _report_cmd():
    exe = REPO / ".venv" / "bin" / "mpu-report"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mpu-report")
    return [found] if found else ["python", "-c", "import sys; from mpu_cli.cli.report import main; sys.exit(main())"]


def _write_run(root: Path, name: str, summary: dict | None, *, status: str = "finished", target: str = "t1",
               summary_file: str = "TOFU_SUMMARY.json", **overrides) -> Path:
    """A run folder as mpu-run writes it, through the runner's own writers: run.json (the resolved config),
    then results.csv, TOFU_SUMMARY.json and COMPLETE; FAILED for a failed run; nothing more when unfinished.
    `overrides` are dotted config keys (arm, kappa, seed, client__lr for client.lr, ...)."""
    from mpu_cli.run.pipeline import result_row

    dotted = [f"{k.replace('__', '.')}={'null' if v is None else v}"
              for k, v in ({"arm": "mpu", "kappa": 0.1, "seed": 0} | overrides).items()]
    cfg = OmegaConf.merge(OmegaConf.structured(MPUConfig), OmegaConf.from_dotlist(dotted))
    run = root / name
    run.mkdir(parents=True)
    rundir.start(cfg, run, "fresh")
    if status == "failed":
        rundir.mark_failed(run, "round 1/1 copy 1/2: the unlearning loss is nan (non-finite); the run is stopped")
    if status != "finished":
        return run
    (run / summary_file).write_text(json.dumps(summary))
    # results.csv carries stale metric values: the table must read the run's own TOFU_SUMMARY.json
    row = result_row(cfg, {k: -1.0 for k in summary}, {}, target)
    pd.DataFrame([row]).to_csv(run / "results.csv", index=False)
    rundir.finish(run)
    return run


S = {"forget_Q_A_Prob": 0.20, "forget_Q_A_ROUGE": 0.40, "model_utility": 0.50, "privleak": -20.0}


def test_relative_degradation_is_signed_so_that_worse_is_positive():
    assert relative_degradation(0.25, 0.20, "lower") == pytest.approx(0.25)  # forgets less than clean
    assert relative_degradation(0.15, 0.20, "lower") == pytest.approx(-0.25)  # forgets more
    assert relative_degradation(0.45, 0.50, "higher") == pytest.approx(0.10)  # less utility
    assert relative_degradation(0.55, 0.50, "higher") == pytest.approx(-0.10)
    assert relative_degradation(-30.0, -20.0, "abs") == pytest.approx(0.5)  # privleak further from 0
    assert math.isnan(relative_degradation(0.3, 0.0, "lower"))
    assert math.isnan(relative_degradation(float("nan"), 0.2, "lower"))


def test_degradation_against_the_clean_run_of_the_same_seed(tmp_path):
    _write_run(tmp_path, "clean_s0", S, arm="clean")
    _write_run(tmp_path, "mpu_s0", {"forget_Q_A_Prob": 0.25, "forget_Q_A_ROUGE": 0.40, "model_utility": 0.45,
                                    "privleak": -30.0})
    _write_run(tmp_path, "mpu_s2", S, seed=2)  # no clean run with seed 2
    df = collect(tmp_path).table.set_index("run")
    assert set(df.status) == {"finished"}
    assert df.loc["clean_s0", "forget_Q_A_Prob"] == pytest.approx(0.20)  # from TOFU_SUMMARY.json
    r = df.loc["mpu_s0"]
    assert (r.deg_forget_Q_A_Prob, r.deg_forget_Q_A_ROUGE, r.deg_model_utility, r.deg_privleak) == pytest.approx(
        (0.25, 0.0, 0.10, 0.5))
    assert r.deg_avg == pytest.approx((0.25 + 0.0 + 0.10) / 3)
    assert r.deg_avg_over == "forget_Q_A_Prob, forget_Q_A_ROUGE, model_utility"
    assert r.clean_run == "clean_s0"
    assert math.isnan(df.loc["mpu_s2", "deg_avg"]) and df.loc["mpu_s2", "clean_run"] == "(no clean run)"


def test_two_learning_rates_of_one_seed_are_two_groups(tmp_path):
    for lr, fp in ((1e-4, 0.3), (3e-4, 0.2)):
        _write_run(tmp_path, f"clean_lr{lr}", S | {"forget_Q_A_Prob": fp}, arm="clean", client__lr=lr)
        _write_run(tmp_path, f"mpu_lr{lr}", S | {"forget_Q_A_Prob": fp + 0.01}, client__lr=lr)
    col = collect(tmp_path)
    assert "client.lr" in col.keys and "client.lr" in col.table.columns
    agg = col.paired[col.paired.metric == "forget_Q_A_Prob"]
    assert sorted(agg["client.lr"]) == [1e-4, 3e-4] and list(agg.n) == [1, 1]
    assert list(agg.diff_mean) == pytest.approx([0.01, 0.01])  # each paired with the clean run of its own lr
    df = col.table.set_index("run")
    assert df.loc["mpu_lr0.0003", "clean_run"] == "clean_lr0.0003"
    assert "| client.lr |" in _md(col) or "client.lr |" in _md(col)


def _md(col):
    from mpu_cli.report.tables import render_markdown

    return render_markdown(col)


def test_two_target_models_are_two_groups(tmp_path):
    _write_run(tmp_path, "a_clean", S, arm="clean", target="aaaa")
    _write_run(tmp_path, "a_mpu", S | {"forget_Q_A_Prob": 0.3}, target="aaaa")
    _write_run(tmp_path, "b_clean", S | {"forget_Q_A_Prob": 0.6}, arm="clean", target="bbbb")
    _write_run(tmp_path, "b_mpu", S | {"forget_Q_A_Prob": 0.6}, target="bbbb")
    col = collect(tmp_path)
    assert col.keys[-1] == "target_hash"
    df = col.table.set_index("run")
    assert df.loc["a_mpu", "clean_run"] == "a_clean" and df.loc["b_mpu", "clean_run"] == "b_clean"
    assert df.loc["b_mpu", "deg_forget_Q_A_Prob"] == pytest.approx(0.0)
    assert len(col.paired[col.paired.metric == "deg_avg"]) == 2


def test_duplicate_runs_are_shown_once_and_never_averaged(tmp_path):
    _write_run(tmp_path, "0_clean", S, arm="clean", kappa=0.01)
    _write_run(tmp_path, "1_clean", S | {"forget_Q_A_Prob": 0.9}, arm="clean", kappa=0.1)  # κ means nothing here
    _write_run(tmp_path, "2_mpu", S | {"forget_Q_A_Prob": 0.3}, kappa=0.01)
    _write_run(tmp_path, "3_mpu", S | {"forget_Q_A_Prob": 0.4}, kappa=0.01)  # the same run again
    col = collect(tmp_path)
    df = col.table.set_index("run")
    assert df.loc["1_clean", "duplicate_of"] == "0_clean" and df.loc["3_mpu", "duplicate_of"] == "2_mpu"
    assert len(col.used) == 2
    fp = col.paired[col.paired.metric == "forget_Q_A_Prob"].iloc[0]
    assert fp.n == 1 and fp.clean_mean == pytest.approx(0.2) and fp.arm_mean == pytest.approx(0.3)
    md = _md(col)
    assert "2 duplicate" in md and "never averaged as seeds" in md


def test_unseeded_runs_are_not_pooled_with_seeded_ones(tmp_path):
    _write_run(tmp_path, "clean_s0", S, arm="clean")
    _write_run(tmp_path, "mpu_s0", S | {"forget_Q_A_Prob": 0.30})
    _write_run(tmp_path, "mpu_none", S | {"forget_Q_A_Prob": 0.50}, seed=None)
    col = collect(tmp_path)
    assert "seeded" in col.keys
    df = col.table.set_index("run")
    assert df.loc["mpu_none", "clean_run"] == "(no clean run)"  # no unseeded clean run to pair with
    from mpu_cli.report.tables import aggregate

    agg = aggregate(col.used, col.keys)
    mpu = agg[agg.arm == "mpu"].set_index("seeded")
    assert mpu.loc["yes", "n"] == 1 and mpu.loc["no", "n"] == 1
    assert mpu.loc["yes", "forget_Q_A_Prob"] == pytest.approx(0.30)


def test_one_clean_run_serves_every_kappa(tmp_path):
    for seed, clean_fp in ((0, 0.20), (1, 0.22), (2, 0.18)):
        _write_run(tmp_path, f"clean_s{seed}", S | {"forget_Q_A_Prob": clean_fp}, arm="clean", seed=seed)
        for kappa in (0.01, 0.1, 1.0):
            _write_run(tmp_path, f"mpu_k{kappa}_s{seed}", S | {"forget_Q_A_Prob": clean_fp + kappa / 10},
                       kappa=kappa, seed=seed)
    col = collect(tmp_path)
    df = col.table.set_index("run")
    for seed in (0, 1, 2):
        for kappa in (0.01, 0.1, 1.0):
            assert df.loc[f"mpu_k{kappa}_s{seed}", "clean_run"] == f"clean_s{seed}"
    fp = col.paired[col.paired.metric == "forget_Q_A_Prob"].set_index("kappa")
    assert list(fp.n) == [3, 3, 3]
    assert fp.loc[1.0, "diff_mean"] == pytest.approx(0.1) and fp.loc[1.0, "verdict"] == "worse"
    assert fp.loc[1.0, "clean_sd"] == pytest.approx(0.02)  # the noise floor: sd of 0.20, 0.22, 0.18


MUSE_S = {"forget_verbmem_ROUGE": 0.20, "forget_knowmem_ROUGE": 0.20, "retain_knowmem_ROUGE": 0.30,
          "privleak": -100.0, "extraction_strength": 0.10}


def test_muse_sweeps_average_the_three_rouge_metrics(tmp_path):
    muse = {"summary_file": "MUSE_SUMMARY.json", "data__benchmark": "muse", "data__split": "forget"}
    for seed, fk in ((0, 0.20), (1, 0.25)):
        _write_run(tmp_path, f"clean_s{seed}", MUSE_S | {"forget_knowmem_ROUGE": fk}, arm="clean", seed=seed, **muse)
        _write_run(tmp_path, f"mpu_s{seed}", MUSE_S | {"forget_knowmem_ROUGE": fk, "retain_knowmem_ROUGE": 0.27},
                   seed=seed, **muse)
    col = collect(tmp_path)
    r = col.table.set_index("run").loc["mpu_s0"]
    assert r.deg_avg_over == "forget_verbmem_ROUGE, forget_knowmem_ROUGE, retain_knowmem_ROUGE"
    assert r.deg_avg == pytest.approx((0 + 0 + 0.10) / 3)  # retain knowmem 10 % below clean
    deg = col.paired[col.paired.metric == "deg_avg"].iloc[0]
    # the clean arm's own spread of deg_avg: seeds 0 and 1 against their mean forget knowmem 0.225
    one, other = (0.20 - 0.225) / 0.225 / 3, (0.25 - 0.225) / 0.225 / 3
    assert deg.clean_sd == pytest.approx(abs(one - other) / math.sqrt(2))
    md = _md(col)
    assert "mean over forget_verbmem_ROUGE, forget_knowmem_ROUGE, retain_knowmem_ROUGE (MUSE's" in md
    assert "forget_Q_A_Prob" not in md


def test_t_interval_by_hand_and_one_seed():
    iv = t_interval([0.01, 0.03, 0.05])
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # sd of 1, 3, 5 (×0.01) is 2 (×0.01)
    assert (iv.mean, iv.n, iv.sd) == pytest.approx((0.03, 3, 0.02))
    assert (iv.low, iv.high) == pytest.approx((0.03 - half, 0.03 + half))
    assert half == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)
    assert verdict(iv, "lower") == "= clean" and paper_criterion(iv) == "undecided"  # -0.0197 .. 0.0797
    assert verdict(t_interval([0.011, 0.012, 0.013]), "lower") == "worse"
    assert verdict(t_interval([0.011, 0.012, 0.013]), "higher") == "better"
    assert paper_criterion(t_interval([0.001, -0.002, 0.003])) == "yes"
    assert paper_criterion(t_interval([0.05, 0.06, 0.055])) == "no"
    one = t_interval([0.02])
    assert one.n == 1 and math.isnan(one.low)
    assert verdict(one, "lower") == ONE_SEED == paper_criterion(one) == "1 seed: no interval"


def test_a_single_seed_comparison_says_it_has_no_interval(tmp_path):
    _write_run(tmp_path, "clean", S, arm="clean")
    _write_run(tmp_path, "mpu", S | {"forget_Q_A_Prob": 0.3})
    col = collect(tmp_path)
    deg = col.paired[col.paired.metric == "deg_avg"].iloc[0]
    assert deg.verdict == "1 seed: no interval" and deg.within_1pct == "1 seed: no interval"
    assert "1 seed: no interval" in _md(col)


@pytest.mark.integration
def test_mpu_report_names_failed_and_unfinished_runs(tmp_path):
    s = {"forget_Q_A_Prob": 0.2, "forget_Q_A_ROUGE": 0.4, "retain_Q_A_Prob": 0.8, "retain_Q_A_ROUGE": 0.7}
    _write_run(tmp_path, "0_npo_clean", s, arm="clean")
    _write_run(tmp_path, "1_npo_mpu", s | {"forget_Q_A_Prob": 0.3})
    _write_run(tmp_path, "2_npo_noised", None, arm="noised", status="unfinished")  # killed before evaluation
    _write_run(tmp_path, "3_npo_mpu_k1e6", None, kappa=1e6, status="failed")
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
    assert "| 1_npo_mpu | mpu | 0.1 | 2 | 0 |" in md and "+50.00 %" in md
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


@pytest.mark.parametrize("key, value", [("retain_logs_path", "/logs/retain.json"), ("prepare__retain_epochs", 3)])
def test_runs_that_differ_only_by_a_null_are_not_pooled(tmp_path, key, value):
    """A key null in some runs and set in others tells them apart: their numbers are never averaged."""
    for s in (0, 1):
        _write_run(tmp_path, f"clean_null_s{s}", S, arm="clean", seed=s)
        _write_run(tmp_path, f"mpu_null_s{s}", S | {"forget_Q_A_Prob": 0.3}, seed=s)
        _write_run(tmp_path, f"clean_set_s{s}", S, arm="clean", seed=s, **{key: value})
        _write_run(tmp_path, f"mpu_set_s{s}", S | {"forget_Q_A_Prob": 0.6}, seed=s, **{key: value})
    col = collect(tmp_path)
    dotted = key.replace("__", ".")
    assert dotted in col.keys
    agg = col.paired[col.paired.metric == "forget_Q_A_Prob"]
    assert len(agg) == 2 and list(agg.n) == [2, 2]
    assert sorted(agg.diff_mean) == pytest.approx([0.1, 0.4])  # 0.25 if the two were pooled
    df = col.table.set_index("run")
    assert df.loc["mpu_set_s0", "clean_run"] == "clean_set_s0" and df.loc["mpu_null_s1", "clean_run"] == "clean_null_s1"


def test_mpu_report_on_a_folder_without_runs_leaves_its_files_alone(tmp_path):
    from mpu_cli.cli.report import main

    for name in ("summary.md", "summary.csv", "paired.csv"):
        (tmp_path / name).write_text("the user's own " + name)
    assert main([str(tmp_path), "--no-plots"]) == 2
    for name in ("summary.md", "summary.csv", "paired.csv"):
        assert (tmp_path / name).read_text() == "the user's own " + name


def test_mpu_report_into_a_place_that_cannot_take_files_is_one_line(tmp_path, capsys):
    """--out below a regular file (the tests run as root, whom a read-only mode does not stop)."""
    from mpu_cli.cli.report import main

    runs = tmp_path / "runs"
    _write_run(runs, "clean", S, arm="clean")
    (tmp_path / "a_file").write_text("")
    code = main([str(runs), "--out", str(tmp_path / "a_file" / "out"), "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cannot write the summary" in err, err
