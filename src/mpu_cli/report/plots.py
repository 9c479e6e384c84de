"""The figures of a sweep (matplotlib, Agg backend), drawn only from data that can carry them:

- plot_arms.png — the paper's Figure 2 view: per algorithm, bars for clean / noised / MPU side by side for
  forget_Q_A_Prob, forget_Q_A_ROUGE and model_utility (retain_Q_A_Prob when utility was not evaluated; on MUSE
  its three ROUGE metrics), mean over seeds with the 95 % t-interval when there are two or more. Axes 0–1.
- plot_degradation_vs_kappa.png — deg_avg (%, worse > 0) against κ per algorithm and arm, with 95 % intervals
  over seeds and the paper's ±1 % band; only when the sweep has two or more κ values.
- plot_forget_vs_utility.png — forget_Q_A_Prob against model_utility (or retain_Q_A_Prob; on MUSE
  forget_knowmem_ROUGE against retain_knowmem_ROUGE), one point per run, with the target and the retain model as
  reference points; the legend outside the axes.

Panels are split by every setting that varies within an algorithm (never pooled); no axis uses offset notation.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import ScalarFormatter

from mpu_cli.evals import benchmarks
from mpu_cli.evals.metric_registry import DIRECTION_WORDS
from mpu_cli.mpu.arms import NOISY, arm_label, arm_name, arm_of_label, is_arm_key, label_order
from mpu_cli.report.stats import t_interval

MARKERS = "osD^v<>pPX*h"


def _better(metric: str) -> str:
    return DIRECTION_WORDS.get(benchmarks.directions().get(metric), "")


def _has(df: pd.DataFrame, metric: str) -> bool:
    return metric in df and df[metric].notna().any()


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def _plain_axes(ax) -> None:
    """Tick labels as plain numbers: never an offset such as 1e−5+8.561e−1 above the axis."""
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "linear":
            fmt = ScalarFormatter(useOffset=False)
            fmt.set_scientific(False)
            axis.set_major_formatter(fmt)


def _legend_below(fig, axes, height_in: float, ncol: int = 6) -> float:
    """One legend under all panels (each label once, from whichever axes drew it), in a strip of its own so it
    never covers data; the fraction of the figure's height the panels must leave free for it."""
    handles: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if not handles:
        return 0.02
    rows = math.ceil(len(handles) / ncol)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), ncol),
               fontsize=8, frameon=False)
    return min(0.45, (0.22 * rows + 0.15) / height_in)


def _kappa_ticks(ax, kappas) -> None:
    """The κ values measured as the log axis' ticks, written as plain numbers (0.01, not 10⁻²)."""
    measured = sorted(set(float(k) for k in kappas))
    ax.set_xticks(measured, [f"{k:g}" for k in measured])
    ax.xaxis.set_minor_locator(plt.NullLocator())


def _panels(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One panel per algorithm and per value of every other setting that differs within it (never pooled)."""
    label = df.algorithm.astype(str)
    others = [k for k in keys if k != "algorithm" and not is_arm_key(k) and k in df]
    for _, rows in df.groupby(df.algorithm.astype(str)):
        for col in others:
            values = rows[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            if values.nunique() > 1:
                label.loc[rows.index] = label.loc[rows.index] + " · " + col.split(".")[-1] + "=" + values
    return label


def _series_order(labels) -> list[str]:
    return sorted(set(labels), key=label_order)


def _color(label: str, i: int, n: int):
    """The arm's colour, or the i-th of n shades of it when the arm has several series."""
    arm = arm_of_label(label)
    if arm.shades is None:
        return arm.colour
    return matplotlib.colormaps[arm.shades](0.45 + 0.5 * i / max(1, n - 1))


def _noisy(series: list[str]) -> list[str]:
    return [s for s in series if arm_of_label(s).noisy]


def _mean_ci(values) -> tuple[float, float]:
    iv = t_interval(list(values))
    half = (iv.high - iv.mean) if iv.n >= 2 else 0.0
    return iv.mean, half


def figure_arms(used: pd.DataFrame, keys: list[str]):
    """The paper's Figure 2 view (see the module docstring); None without a metric to show."""
    metrics = [m for m in benchmarks.of_rows(used).deg_avg if _has(used, m)]
    if "model_utility" not in metrics and _has(used, "retain_Q_A_Prob"):  # a quick TOFU evaluation: no utility
        metrics.append("retain_Q_A_Prob")
    if not metrics or not len(used):
        return None
    df = used.assign(fig_panel=_panels(used, keys), fig_arm=[arm_label(r) for r in used.to_dict("records")])
    groups = sorted(df["fig_panel"].unique())
    series = _series_order(df["fig_arm"])
    noisy = _noisy(series)
    # at least wide enough for the title and a legend row of five arms, whatever the number of bars
    fig_width = min(18.0, max(8.5, 2.5 + 0.32 * len(groups) * len(series)))
    legend_cols = max(1, int(fig_width / 1.7))
    legend_in = 0.22 * math.ceil(len(series) / legend_cols) + 0.15
    height = 2.4 * len(metrics) + 0.9 + legend_in
    fig, axes = plt.subplots(len(metrics), 1, figsize=(fig_width, height), squeeze=False)
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for ax, metric in zip(axes[:, 0], metrics):
        for j, s in enumerate(series):
            means, halves = [], []
            for g in groups:
                vals = _num(df[(df["fig_panel"] == g) & (df["fig_arm"] == s)][metric]).dropna()
                m, h = _mean_ci(vals) if len(vals) else (math.nan, 0.0)
                means.append(m)
                halves.append(h)
            color = _color(s, noisy.index(s) if s in noisy else 0, len(noisy))
            ax.bar(x + (j - (len(series) - 1) / 2) * width, means, width * 0.92, yerr=halves, capsize=2,
                   color=color, label=s, error_kw={"lw": 0.8})
        ax.set_xticks(x)
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric, fontsize=8)
        ax.set_title(f"{metric} ({_better(metric)})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    n_seeds = df.groupby(["fig_panel", "fig_arm"]).size()
    bottom = _legend_below(fig, axes[:, 0], height, ncol=legend_cols)
    fig.suptitle(f"Clean vs noised vs MPU per algorithm: mean over seeds (n = {n_seeds.min()}–{n_seeds.max()}), "
                 "bars ± 95 % interval", fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height))
    return fig


def figure_degradation_vs_kappa(used: pd.DataFrame, keys: list[str]):
    """deg_avg in % against κ; None unless the noised/MPU runs have two or more κ values and a deg_avg."""
    noisy = used[used.arm.isin(NOISY)]
    if "deg_avg" not in noisy or noisy.deg_avg.notna().sum() == 0 or _num(noisy.kappa).nunique() < 2:
        return None
    df = noisy.assign(fig_panel=_panels(noisy, keys),
                      fig_series=[arm_name(r) for r in noisy.to_dict("records")])
    panels = sorted(df["fig_panel"].unique())
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    series = _series_order(df["fig_series"])
    height = 3.0 * rows + 0.6 + 0.22 * math.ceil(len(series) / 4) + 0.15
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, height), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        d = df[df["fig_panel"] == panel]
        ax.axhspan(-1, 1, color="grey", alpha=0.15, lw=0)
        ax.axhline(0, color="grey", lw=0.8)
        for i, s in enumerate(series):
            g = d[d["fig_series"] == s]
            stats = [(k, *_mean_ci(100 * _num(gk.deg_avg).dropna())) for k, gk in g.groupby(_num(g.kappa))]
            stats = [t for t in stats if not math.isnan(t[1])]
            if stats:
                k, m, h = zip(*stats)
                ax.errorbar(k, m, yerr=h, marker="o", capsize=3, label=s, color=_color(s, i, len(series)))
        ax.set_xscale("log")
        _kappa_ticks(ax, _num(d.kappa).dropna())
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("κ (log axis)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        _plain_axes(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("deg_avg vs clean, % (worse > 0)", fontsize=8)
    bottom = _legend_below(fig, list(axes.flat), height, ncol=4)
    fig.suptitle("Average degradation against κ: mean over seeds, 95 % interval; grey: the paper's ±1 %",
                 fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height))
    return fig


def figure_forget_vs_utility(used: pd.DataFrame, keys: list[str]):
    """Forgetting against utility, one point per run, the target and the retain model as references."""
    axes = benchmarks.of_rows(used).forget_utility_axes
    axes_with_values = [(y, x) for y, x in axes if _has(used, y) and _has(used, x)]
    if not axes_with_values:
        return None
    ycol, xcol = axes_with_values[0]
    df = used.assign(fig_arm=[arm_label(r) for r in used.to_dict("records")])
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    algorithms = sorted(df.algorithm.astype(str).unique())
    series = _series_order(df["fig_arm"])
    noisy = _noisy(series)
    for a_i, alg in enumerate(algorithms):
        for s in series:
            g = df[(df.algorithm.astype(str) == alg) & (df["fig_arm"] == s)]
            if len(g):
                ax.scatter(_num(g[xcol]), _num(g[ycol]), marker=MARKERS[a_i % len(MARKERS)], alpha=0.8,
                           color=_color(s, noisy.index(s) if s in noisy else 0, len(noisy)))
    # two short legends instead of one entry per (algorithm, arm): colour = arm, marker = algorithm
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=_color(s, noisy.index(s) if s in noisy else 0, len(noisy)),
                      label=s) for s in series]
    handles += [Line2D([], [], ls="", marker=MARKERS[i % len(MARKERS)], color="grey", label=a)
                for i, a in enumerate(algorithms)]
    for prefix, name, marker in (("target_", "target (before unlearning)", "*"),
                                 ("retainmodel_", "retain model (never saw D_f)", "D")):
        tx, ty = f"{prefix}{xcol}", f"{prefix}{ycol}"
        if tx in df and ty in df and _num(df[tx]).notna().any():
            ax.scatter([_num(df[tx]).mean()], [_num(df[ty]).mean()], color="black", marker=marker, s=140)
            handles.append(Line2D([], [], ls="", marker=marker, color="black", markersize=10, label=name))
    ax.set_xlabel(f"{xcol} ({_better(xcol)})" + ("; model_utility not evaluated" if xcol == "retain_Q_A_Prob" else ""))
    ax.set_ylabel(f"{ycol} ({_better(ycol)})")
    ax.set_ylim(0, 1)
    lo, hi = ax.get_xlim()
    if hi - lo < 0.5:  # the utility axis is zoomed to the runs: say so, a 0.01 gap looks large here
        ax.set_xlabel(ax.get_xlabel() + f" — axis zoomed to {lo:.2f}–{hi:.2f}")
    ax.set_title("Forgetting vs utility, one point per run", fontsize=10)
    ax.grid(alpha=0.3)
    _plain_axes(ax)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              frameon=False)
    fig.tight_layout()
    return fig


FIGURES = {
    "plot_arms.png": figure_arms,
    "plot_degradation_vs_kappa.png": figure_degradation_vs_kappa,
    "plot_forget_vs_utility.png": figure_forget_vs_utility,
}


def write_plots(done: pd.DataFrame, out_dir: Path, keys: list[str] = ()) -> list[str]:
    """The figures a table of finished runs (duplicates left out) can carry; returns the files written."""
    out_dir = Path(out_dir)
    written = []
    for name, make in FIGURES.items():
        fig = make(done, list(keys))
        if fig is None:
            continue
        _save(fig, out_dir / name)
        plt.close(fig)
        written.append(str(out_dir / name))
    return written


def _save(fig, path) -> None:
    """savefig to a temporary name, then rename: a reader never sees half a PNG."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
