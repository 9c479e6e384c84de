"""The break map (report/breakmap.py) from a small hand-made table: the paired intervals, the largest κ that
still matches clean, the figure, and no map for a sweep at one κ."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from scipy import stats

from helpers import BREAK_KEYS as KEYS
from helpers import break_map_table as _table
from mpu_cli.report.breakmap import applies, break_points, break_table, figure_break_map, write_break_map


def test_paired_intervals_and_the_largest_kappa_that_still_matches_clean():
    points = break_points(_table(), KEYS)
    assert set(points.arm) == {"clean", "noised", "noised α=mean(m=2)", "mpu m=2"}
    p = points.set_index(["arm", "kappa", "metric"])
    # noised at κ=1: differences 0.20, 0.21, 0.22 → mean 0.21 ± t(0.975, 2)·0.01/√3
    r = p.loc[("noised", 1.0, "forget_Q_A_Prob")]
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert r.diff_mean == pytest.approx(0.21) and r.diff_low == pytest.approx(0.21 - half)
    assert r.verdict == "worse" and r.n_paired == 3
    assert r["mean"] == pytest.approx(0.46 + 0.21)  # the arm's own mean over seeds (clean mean 0.46)
    assert p.loc[("noised", 0.1, "forget_Q_A_Prob")].verdict == "= clean"
    clean = points[(points.arm == "clean") & (points.metric == "forget_Q_A_Prob")].iloc[0]
    assert clean["mean"] == pytest.approx(0.46) and clean.n == 3
    table = break_table(points).set_index(["arm", "metric"])
    assert table.loc[("noised", "forget_Q_A_Prob"), "holds_to"] == 0.1
    assert table.loc[("noised", "forget_Q_A_Prob"), "leaves_at"] == 1.0
    assert table.loc[("noised", "forget_Q_A_Prob"), "mean_at_leave"] == pytest.approx(0.67)
    assert math.isnan(table.loc[("mpu m=2", "forget_Q_A_Prob"), "holds_to"])  # already the smallest κ differs
    assert table.loc[("mpu m=2", "deg_avg"), "leaves_at"] == 0.1
    assert table.loc[("noised α=mean(m=2)", "deg_avg"), "holds_to"] == 1.0  # never leaves
    assert math.isnan(table.loc[("noised α=mean(m=2)", "deg_avg"), "leaves_at"])
    assert table.loc[("noised", "forget_Q_A_Prob"), "clean_mean"] == pytest.approx(0.46)


def test_one_seed_gives_no_interval_and_says_so():
    df = _table()
    table = break_table(break_points(df[df.seed == 0], KEYS)).set_index(["arm", "metric"])
    row = table.loc[("noised", "forget_Q_A_Prob")]
    assert math.isnan(row.holds_to) and math.isnan(row.leaves_at) and "no interval" in row.note


def test_the_figure_compares_arms_on_a_log_kappa_axis_with_fixed_probability_axes(tmp_path):
    fig = figure_break_map(break_points(_table(), KEYS))
    forget, deg = fig.axes[:2]
    assert forget.get_xscale() == "log" and deg.get_xscale() == "log"
    assert forget.get_ylim() == (0.0, 1.0)
    assert "lower is better" in forget.get_title() and "worse > 0" in deg.get_title()
    assert "%" in deg.get_ylabel()
    for ax in (forget, deg):
        fmt = ax.yaxis.get_major_formatter()
        assert not hasattr(fmt, "get_useOffset") or fmt.get_useOffset() is False
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0].startswith("clean") and {"noised", "noised α=mean(m=2)", "mpu m=2"} <= set(labels)
    plt.close(fig)
    section = write_break_map(_table(), tmp_path, KEYS)
    assert (tmp_path / "plot_break_map.png").stat().st_size > 10_000
    written = pd.read_csv(tmp_path / "break_map.csv")
    assert len(written) == 3 * 2  # 3 arms x 2 metrics
    assert any(line.startswith("## Break map") for line in section)
    assert any("| npo | noised | forget_Q_A_Prob | 0.1 1 | 3 | 0.46 | 0.1 | 1 | 0.67 |" == line for line in section)


def test_one_kappa_draws_no_break_map(tmp_path):
    df = _table(kappas=(0.1,))
    assert not applies(df)
    assert figure_break_map(break_points(df, KEYS)) is None
    assert write_break_map(df, tmp_path, KEYS) == []
    assert list(tmp_path.iterdir()) == []
    two = _table()
    assert applies(two) and not applies(two[two.arm != "clean"])  # two κ, but no clean run


def test_muse_runs_map_their_verbatim_memorization():
    """A MUSE table (data.benchmark=muse: its ROUGE metrics) maps forget_verbmem_ROUGE and deg_avg."""
    tofu = _table()
    muse = tofu.drop(columns=["forget_Q_A_Prob"]).assign(
        forget_verbmem_ROUGE=tofu.forget_Q_A_Prob, forget_knowmem_ROUGE=0.2, retain_knowmem_ROUGE=0.3,
        **{"data.benchmark": "muse"})
    for col in ("forget_Q_A_ROUGE", "model_utility"):
        muse = muse.drop(columns=[col], errors="ignore")
    points = break_points(muse, KEYS)
    assert set(points.metric) == {"forget_verbmem_ROUGE", "deg_avg"}
    fig = figure_break_map(points)
    assert "forget_verbmem_ROUGE (lower is better)" in fig.axes[0].get_title()
    plt.close(fig)
