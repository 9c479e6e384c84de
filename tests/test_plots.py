"""The sweep figures from a small hand-made table: which are drawn, labelled, without offset notation."""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from mpu_cli.report.plots import FIGURES, figure_arms, figure_degradation_vs_kappa, figure_forget_vs_utility, write_plots


def _table(kappas=(0.01, 0.1), seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for alg, seed in itertools.product(("npo", "graddiff"), seeds):
        base = {"algorithm": alg, "seed": seed, "target_forget_Q_A_Prob": 0.92, "target_model_utility": 0.33,
                "retainmodel_forget_Q_A_Prob": 0.04, "retainmodel_model_utility": 0.355}
        rows.append(base | {"arm": "clean", "kappa": 0.0, "m": 1, "forget_Q_A_Prob": 0.455 + 0.001 * seed,
                            "forget_Q_A_ROUGE": 0.5, "model_utility": 0.33312, "deg_avg": float("nan")})
        for arm, kappa in itertools.product(("noised", "mpu"), kappas):
            rows.append(base | {"arm": arm, "kappa": kappa, "m": 2 if arm == "mpu" else 1,
                                "forget_Q_A_Prob": 0.455 + kappa / 10 + 0.001 * seed, "forget_Q_A_ROUGE": 0.5,
                                "model_utility": 0.33318, "deg_avg": kappa / 5 + 0.001 * seed})
    return pd.DataFrame(rows)


def _no_offset(fig) -> None:
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            fmt = axis.get_major_formatter()
            if hasattr(fmt, "get_useOffset"):
                assert fmt.get_useOffset() is False, ax.get_title()


def test_the_three_figures_are_drawn_labelled_and_plain(tmp_path):
    df = _table()
    arms = figure_arms(df, ["algorithm", "arm", "kappa", "m"])
    assert [ax.get_ylim() for ax in arms.axes] == [(0.0, 1.0)] * 3  # probabilities on their full range
    assert [ax.get_title() for ax in arms.axes] == ["forget_Q_A_Prob (lower is better)",
                                                    "forget_Q_A_ROUGE (lower is better)",
                                                    "model_utility (higher is better)"]
    assert [t.get_text() for t in arms.axes[0].get_xticklabels()] == ["graddiff", "npo"]
    _no_offset(arms)
    deg = figure_degradation_vs_kappa(df, ["algorithm", "arm", "kappa", "m"])
    assert deg.axes[0].get_xscale() == "log" and "%" in deg.axes[0].get_ylabel()
    _no_offset(deg)
    fvu = figure_forget_vs_utility(df, ["algorithm", "arm", "kappa", "m"])
    labels = [t.get_text() for t in fvu.axes[0].get_legend().get_texts()]
    assert "target (before unlearning)" in labels and "retain model (never saw D_f)" in labels
    assert "zoomed" in fvu.axes[0].get_xlabel() and "higher is better" in fvu.axes[0].get_xlabel()
    _no_offset(fvu)
    for fig in (arms, deg, fvu):
        plt.close(fig)
    written = write_plots(df, tmp_path, ["algorithm", "arm", "kappa", "m"])
    assert sorted(p.split("/")[-1] for p in written) == sorted(FIGURES)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in FIGURES)


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_one_kappa_draws_no_kappa_plot(tmp_path, seeds):
    df = _table(kappas=(0.1,), seeds=seeds)
    assert figure_degradation_vs_kappa(df, ["algorithm", "arm"]) is None
    written = [p.split("/")[-1] for p in write_plots(df, tmp_path, ["algorithm", "arm"])]
    assert written == ["plot_arms.png", "plot_forget_vs_utility.png"]
