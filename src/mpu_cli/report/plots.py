"""Sweep plots (matplotlib, Agg backend: no display needed).

- plot_forget_vs_utility.png: forget_Q_A_Prob against model_utility, one point per run (colour: arm,
  marker: algorithm; the target before unlearning as a black star). Without model_utility (eval.metrics=quick)
  the x axis is retain_Q_A_Prob, and its label says so.
- plot_kappa_<metric>.png: each headline metric (and deg_avg) against κ, one panel per algorithm, one line
  per arm (and m): the mean over seeds with a ±1 std error bar and every seed as a faint dot; the clean runs
  (κ = 0) as a horizontal line with a ±1 std band.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from mpu_cli.report.columns import HEADLINE
from mpu_cli.report.compare import is_arm_key

ARM_COLORS = {"clean": "tab:green", "noised": "tab:red", "mpu": "tab:blue"}
MARKERS = "osD^v<>pPX*h"


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def plot_forget_vs_utility(df: pd.DataFrame, path: Path) -> Path | None:
    if "forget_Q_A_Prob" not in df or df["forget_Q_A_Prob"].isna().all():
        return None
    xcol, xlabel = "model_utility", "model_utility"
    if xcol not in df or df[xcol].isna().all():
        xcol, xlabel = "retain_Q_A_Prob", "retain_Q_A_Prob (model_utility not evaluated)"
        if xcol not in df or df[xcol].isna().all():
            return None
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    algorithms = sorted(df.algorithm.astype(str).unique())
    for a_i, alg in enumerate(algorithms):
        for arm, color in ARM_COLORS.items():
            g = df[(df.algorithm.astype(str) == alg) & (df.arm == arm)]
            if len(g):
                ax.scatter(
                    _num(g[xcol]),
                    _num(g.forget_Q_A_Prob),
                    color=color,
                    marker=MARKERS[a_i % len(MARKERS)],
                    alpha=0.8,
                    label=f"{alg} {arm}",
                )
    tx, ty = f"target_{xcol}", "target_forget_Q_A_Prob"
    if tx in df and ty in df and df[tx].notna().any():
        ax.scatter(
            [_num(df[tx]).mean()], [_num(df[ty]).mean()], color="black", marker="*", s=160, label="target"
        )
    ax.set_xlabel(f"{xlabel} (higher is better)")
    ax.set_ylabel("forget_Q_A_Prob (lower is better)")
    ax.set_title("Forgetting vs utility, one point per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(algorithms) > 3 else 1, loc="best")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _series(df: pd.DataFrame, keys: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Non-clean rows, one series per arm and per value of the arm's other varying keys (m, server.*)."""
    out = []
    noisy = df[df.arm.isin(["noised", "mpu"])]
    split = [k for k in keys if is_arm_key(k) and k not in ("arm", "kappa") and k in noisy]
    for arm in ("noised", "mpu"):
        g = noisy[noisy.arm == arm]
        if not len(g):
            continue
        by = [k for k in split if g[k].astype(str).nunique() > 1]
        if not by:
            out.append((arm, g))
            continue
        for values, gm in g.groupby([g[k].astype(str) for k in by], sort=True):
            values = values if isinstance(values, tuple) else (values,)
            out.append((f"{arm} " + " ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(by, values)), gm))
    return out


def _panels(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One panel per algorithm and per value of every other setting that differs within it (never pooled)."""
    label = df.algorithm.astype(str)
    others = [k for k in keys if k != "algorithm" and not is_arm_key(k) and k in df]
    for alg, rows in df.groupby(df.algorithm.astype(str)):
        for col in others:
            values = rows[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            if values.nunique() > 1:
                label.loc[rows.index] = label.loc[rows.index] + " · " + col.split(".")[-1] + "=" + values
    return label


def plot_metric_vs_kappa(df: pd.DataFrame, metric: str, path: Path, keys: list[str] = ()) -> Path | None:
    if metric not in df or df[metric].isna().all():
        return None
    keys = list(keys) or [c for c in ("model", "data", "split") if c in df]
    df = df.assign(_panel=_panels(df, keys))
    algorithms = sorted(df._panel.unique())
    n = len(algorithms)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    kappas = _num(df[df.arm != "clean"].kappa).dropna()
    log_x = len(kappas) and (kappas > 0).all() and kappas.nunique() > 1
    for ax, alg in zip(axes.flat, algorithms):
        d = df[df._panel == alg]
        clean = _num(d[d.arm == "clean"][metric]).dropna()
        if len(clean):
            mu = clean.mean()
            ax.axhline(mu, color=ARM_COLORS["clean"], lw=1.5, label=f"clean (n={len(clean)})")
            if len(clean) > 1:
                sd = clean.std(ddof=1)
                ax.axhspan(mu - sd, mu + sd, color=ARM_COLORS["clean"], alpha=0.15)
        series = _series(d, keys)
        for i, (label, g) in enumerate(series):
            shade = plt.cm.Blues(0.45 + 0.5 * i / max(1, len(series) - 1))  # mpu m=2, 3, 4: darker with m
            color = ARM_COLORS.get(label, shade)
            # dodge the series sideways so that error bars at the same kappa do not hide each other
            shift = 0.07 * (i - (len(series) - 1) / 2)
            x, y = _num(g.kappa) * (1 + shift) if log_x else _num(g.kappa) + shift * 0.02, _num(g[metric])
            ax.scatter(x, y, color=color, alpha=0.3, s=12)
            stats = pd.DataFrame({"k": x, "y": y}).dropna().groupby("k").y.agg(["mean", "std", "count"])
            if len(stats):
                ax.errorbar(
                    stats.index,
                    stats["mean"],
                    yerr=stats["std"].fillna(0),
                    color=color,
                    marker="o",
                    capsize=3,
                    label=label,
                )
        if log_x:
            ax.set_xscale("log")
        ax.set_title(alg, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    for ax in list(axes.flat)[:n]:
        ax.set_xlabel("κ", fontsize=8)
        if metric.startswith("deg_"):
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric, fontsize=8)
    handles, labels = {}, {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            key = lab.split(" (n=")[0]
            handles.setdefault(key, h)
            labels.setdefault(key, lab if key != "clean" else "clean")
    if handles:
        fig.legend(list(handles.values()), list(labels.values()), loc="upper right", fontsize=7)
    suffix = " (relative degradation vs clean, worse > 0)" if metric.startswith("deg_") else ""
    fig.suptitle(f"{metric} vs κ: mean ± std over seeds{suffix}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 0.95))
    _save(fig, path)
    plt.close(fig)
    return path


def write_plots(done: pd.DataFrame, out_dir: Path, keys: list[str] = ()) -> list[str]:
    """All plots of a table of finished runs (duplicates left out), split by the grouping keys; returns the
    files written."""
    out_dir = Path(out_dir)
    written = [plot_forget_vs_utility(done, out_dir / "plot_forget_vs_utility.png")]
    for metric in (*HEADLINE, "deg_avg"):
        written.append(plot_metric_vs_kappa(done, metric, out_dir / f"plot_kappa_{metric}.png", keys))
    return [str(p) for p in written if p is not None]


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
