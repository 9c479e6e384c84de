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


def test_legends_of_many_arms_cover_no_panel_and_name_every_series():
    """Six κ values: twelve noisy arms. The legend gets a strip of its own under the panels, and the κ plot's
    legend lists every series that any panel drew."""
    df = _table(kappas=(0.01, 0.03, 0.1, 0.3, 1.0, 2.0))
    keys = ["algorithm", "arm", "kappa", "m"]
    for fig, n_series in ((figure_arms(df, keys), 13), (figure_degradation_vs_kappa(df, keys), 2)):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        assert len(legend.get_texts()) == n_series
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        plt.close(fig)
    noisy = df[df.arm == "mpu"].assign(algorithm="npo")
    only_in_second = noisy.assign(algorithm="graddiff", m=4)
    deg = figure_degradation_vs_kappa(pd.concat([df[df.algorithm == "npo"], only_in_second]), keys)
    assert {t.get_text() for t in deg.legends[0].get_texts()} >= {"mpu m=2", "mpu m=4"}
    plt.close(deg)


def _muse_table() -> pd.DataFrame:
    rows = []
    for alg, seed in itertools.product(("npo", "graddiff"), (0, 1)):
        base = {"data.benchmark": "muse", "algorithm": alg, "seed": seed, "target_forget_knowmem_ROUGE": 0.34,
                "target_retain_knowmem_ROUGE": 0.31, "retainmodel_forget_knowmem_ROUGE": 0.0,
                "retainmodel_retain_knowmem_ROUGE": 0.31}
        for arm, kappa in (("clean", 0.0), ("noised", 0.1), ("mpu", 0.01), ("mpu", 0.1)):
            rows.append(base | {"arm": arm, "kappa": kappa, "m": 2 if arm == "mpu" else 1,
                                "forget_verbmem_ROUGE": 0.2, "forget_knowmem_ROUGE": 0.2 + 0.01 * seed,
                                "retain_knowmem_ROUGE": 0.28, "privleak": -99.0, "deg_avg": kappa / 5})
    return pd.DataFrame(rows)


def test_muse_sweeps_draw_their_rouge_metrics(tmp_path):
    df = _muse_table()
    keys = ["algorithm", "arm", "kappa", "m"]
    arms = figure_arms(df, keys)
    assert [ax.get_title() for ax in arms.axes] == ["forget_verbmem_ROUGE (lower is better)",
                                                    "forget_knowmem_ROUGE (lower is better)",
                                                    "retain_knowmem_ROUGE (higher is better)"]
    fvu = figure_forget_vs_utility(df, keys)
    ax = fvu.axes[0]
    assert ax.get_ylabel() == "forget_knowmem_ROUGE (lower is better)"
    assert ax.get_xlabel().startswith("retain_knowmem_ROUGE (higher is better)")
    # the runs and the two reference models: target at (0.31, 0.34), retain model at (0.31, 0.0)
    points = [tuple(p) for c in ax.collections for p in c.get_offsets()]
    assert (0.31, 0.34) in points and (0.31, 0.0) in points
    for fig in (arms, fvu):
        plt.close(fig)
    written = write_plots(df, tmp_path, keys)
    assert sorted(p.split("/")[-1] for p in written) == sorted(FIGURES)
