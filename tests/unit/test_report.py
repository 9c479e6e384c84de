"""Sweep tables: grouping by what differs, duplicates, the clean baseline, paired statistics, failed and
unfinished runs, the mpu-report command and a real sweep with a failing job."""

import math

import pytest
from scipy import stats

from helpers import write_run
from mpu_cli.report.stats import ONE_SEED, paper_criterion, t_interval, verdict
from mpu_cli.report.tables import collect, relative_degradation

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
    write_run(tmp_path, "clean_s0", S, arm="clean")
    write_run(tmp_path, "mpu_s0", {"forget_Q_A_Prob": 0.25, "forget_Q_A_ROUGE": 0.40, "model_utility": 0.45,
                                    "privleak": -30.0})
    write_run(tmp_path, "mpu_s2", S, seed=2)  # no clean run with seed 2
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
        write_run(tmp_path, f"clean_lr{lr}", S | {"forget_Q_A_Prob": fp}, arm="clean", client__lr=lr)
        write_run(tmp_path, f"mpu_lr{lr}", S | {"forget_Q_A_Prob": fp + 0.01}, client__lr=lr)
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
    write_run(tmp_path, "a_clean", S, arm="clean", target="aaaa")
    write_run(tmp_path, "a_mpu", S | {"forget_Q_A_Prob": 0.3}, target="aaaa")
    write_run(tmp_path, "b_clean", S | {"forget_Q_A_Prob": 0.6}, arm="clean", target="bbbb")
    write_run(tmp_path, "b_mpu", S | {"forget_Q_A_Prob": 0.6}, target="bbbb")
    col = collect(tmp_path)
    assert col.keys[-1] == "target_hash"
    df = col.table.set_index("run")
    assert df.loc["a_mpu", "clean_run"] == "a_clean" and df.loc["b_mpu", "clean_run"] == "b_clean"
    assert df.loc["b_mpu", "deg_forget_Q_A_Prob"] == pytest.approx(0.0)
    assert len(col.paired[col.paired.metric == "deg_avg"]) == 2


def test_duplicate_runs_are_shown_once_and_never_averaged(tmp_path):
    write_run(tmp_path, "0_clean", S, arm="clean", kappa=0.01)
    write_run(tmp_path, "1_clean", S | {"forget_Q_A_Prob": 0.9}, arm="clean", kappa=0.1)  # κ means nothing here
    write_run(tmp_path, "2_mpu", S | {"forget_Q_A_Prob": 0.3}, kappa=0.01)
    write_run(tmp_path, "3_mpu", S | {"forget_Q_A_Prob": 0.4}, kappa=0.01)  # the same run again
    col = collect(tmp_path)
    df = col.table.set_index("run")
    assert df.loc["1_clean", "duplicate_of"] == "0_clean" and df.loc["3_mpu", "duplicate_of"] == "2_mpu"
    assert len(col.used) == 2
    fp = col.paired[col.paired.metric == "forget_Q_A_Prob"].iloc[0]
    assert fp.n == 1 and fp.clean_mean == pytest.approx(0.2) and fp.arm_mean == pytest.approx(0.3)
    md = _md(col)
    assert "2 duplicate" in md and "never averaged as seeds" in md


def test_unseeded_runs_are_not_pooled_with_seeded_ones(tmp_path):
    write_run(tmp_path, "clean_s0", S, arm="clean")
    write_run(tmp_path, "mpu_s0", S | {"forget_Q_A_Prob": 0.30})
    write_run(tmp_path, "mpu_none", S | {"forget_Q_A_Prob": 0.50}, seed=None)
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
        write_run(tmp_path, f"clean_s{seed}", S | {"forget_Q_A_Prob": clean_fp}, arm="clean", seed=seed)
        for kappa in (0.01, 0.1, 1.0):
            write_run(tmp_path, f"mpu_k{kappa}_s{seed}", S | {"forget_Q_A_Prob": clean_fp + kappa / 10},
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
        write_run(tmp_path, f"clean_s{seed}", MUSE_S | {"forget_knowmem_ROUGE": fk}, arm="clean", seed=seed, **muse)
        write_run(tmp_path, f"mpu_s{seed}", MUSE_S | {"forget_knowmem_ROUGE": fk, "retain_knowmem_ROUGE": 0.27},
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
    write_run(tmp_path, "clean", S, arm="clean")
    write_run(tmp_path, "mpu", S | {"forget_Q_A_Prob": 0.3})
    col = collect(tmp_path)
    deg = col.paired[col.paired.metric == "deg_avg"].iloc[0]
    assert deg.verdict == "1 seed: no interval" and deg.within_1pct == "1 seed: no interval"
    assert "1 seed: no interval" in _md(col)


@pytest.mark.parametrize("key, value", [("retain_logs_path", "/logs/retain.json"), ("prepare__retain_epochs", 3)])
def test_runs_that_differ_only_by_a_null_are_not_pooled(tmp_path, key, value):
    """A key null in some runs and set in others tells them apart: their numbers are never averaged."""
    for s in (0, 1):
        write_run(tmp_path, f"clean_null_s{s}", S, arm="clean", seed=s)
        write_run(tmp_path, f"mpu_null_s{s}", S | {"forget_Q_A_Prob": 0.3}, seed=s)
        write_run(tmp_path, f"clean_set_s{s}", S, arm="clean", seed=s, **{key: value})
        write_run(tmp_path, f"mpu_set_s{s}", S | {"forget_Q_A_Prob": 0.6}, seed=s, **{key: value})
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
    write_run(runs, "clean", S, arm="clean")
    (tmp_path / "a_file").write_text("")
    code = main([str(runs), "--out", str(tmp_path / "a_file" / "out"), "--no-plots"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cannot write the summary" in err, err
