"""Where each arm stops matching clean unlearning: the break map of a sweep over κ.

Drawn when some noised/MPU arm of a sweep was run at two or more κ and there are clean runs to compare with.
Per panel (an algorithm, split further by any other setting that differs within it, never pooled), per arm
(noised, noised α=mean(m=…), mpu m=2, mpu m=4 pow2, …) and per κ:

- the arm's forget_Q_A_Prob and deg_avg, mean over seeds with the 95 % t-interval (report/stats.t_interval);
- the paired difference against the clean run of the same seed (arm − clean for forget_Q_A_Prob; deg_avg is
  already relative to it) with its 95 % t-interval: the arm still matches clean at that κ when the interval
  contains 0 (the "= clean" verdict of the paired table in summary.md).

Outputs: break_map_points.csv (the per-κ numbers), break_map.csv (per panel, arm and metric: the largest κ up to
which every measured κ still matches clean, and the first κ that does not), plot_break_map.png and a section of
summary.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mpu_cli.evals import benchmarks
from mpu_cli.evals.metric_registry import DIRECTION_WORDS
from mpu_cli.mpu.arms import ARMS, BASELINE, NOISY, arm_name, arm_of_label, name_order
from mpu_cli.report.stats import t_interval, verdict


def map_metrics(df: pd.DataFrame) -> tuple[str, str]:
    """(the forget metric of the runs' benchmark, deg_avg)."""
    return benchmarks.of_rows(df).forget_metric, "deg_avg"


def _better(metric: str) -> str:
    return "worse > 0" if metric == "deg_avg" else DIRECTION_WORDS[benchmarks.directions()[metric]]


def _num(s) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def _panel_labels(used: pd.DataFrame, keys: list[str]) -> pd.Series:
    from mpu_cli.report.plots import _panels

    return _panels(used, keys)


def applies(used: pd.DataFrame) -> bool:
    """A break map needs clean runs and one noised/MPU arm at two or more κ."""
    if not len(used) or "arm" not in used or not (used.arm == BASELINE).any():
        return False
    noisy = used[used.arm.isin(NOISY)]
    if not len(noisy):
        return False
    arms = pd.Series([arm_name(r) for r in noisy.to_dict("records")], index=noisy.index)
    return bool((_num(noisy.kappa).groupby(arms).nunique() >= 2).any())


def break_points(used: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per (panel, arm, κ, metric) and one per (panel, clean, metric): n, the metric's mean and 95 %
    interval over seeds, and for noised/MPU the paired difference vs clean with its interval and verdict.
    `used`: finished runs, duplicates left out, with clean_run and deg_avg filled in (tables.collect)."""
    df = used.assign(_panel=_panel_labels(used, keys), _arm=[arm_name(r) for r in used.to_dict("records")])
    by_run = df.set_index("run")
    metrics = map_metrics(df)
    rows = []
    for (panel, arm), g in df.groupby(["_panel", "_arm"], sort=False):
        if arm == BASELINE:
            for metric in metrics:
                values = [0.0] * len(g) if metric == "deg_avg" else _num(g[metric]).tolist() if metric in g else []
                iv = t_interval(values)
                rows.append({"panel": panel, "arm": arm, "kappa": math.nan, "metric": metric, "n": iv.n,
                             "mean": iv.mean, "low": iv.low, "high": iv.high})
            continue
        for kappa, gk in g.groupby(_num(g.kappa)):
            paired = gk[gk.clean_run.isin(by_run.index)]
            for metric in metrics:
                if metric not in gk or _num(gk[metric]).isna().all():
                    continue
                iv = t_interval(_num(gk[metric]).tolist())
                if metric == "deg_avg":
                    diffs = _num(paired.deg_avg).tolist()
                else:
                    clean = _num(by_run.loc[paired.clean_run, metric]).to_numpy()
                    diffs = list(_num(paired[metric]).to_numpy() - clean)
                d = t_interval(diffs)
                rows.append({"panel": panel, "arm": arm, "kappa": float(kappa), "metric": metric, "n": iv.n,
                             "mean": iv.mean, "low": iv.low, "high": iv.high, "n_paired": d.n,
                             "diff_mean": d.mean, "diff_low": d.low, "diff_high": d.high,
                             "verdict": verdict(d, "lower")})
    return pd.DataFrame(rows)


def _matches(row) -> bool | None:
    """True when the paired interval contains 0, False when it does not, None without an interval."""
    if row.n_paired < 2 or math.isnan(row.diff_low):
        return None
    return bool(row.diff_low <= 0 <= row.diff_high)


def break_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per (panel, arm, metric): the κ measured, `holds_to` — the largest κ such that at it and at every smaller
    measured κ the paired interval contains 0 (empty when already the smallest does not) — and `leaves_at`,
    the first κ where it does not (empty when none does), with the arm's mean there."""
    rows = []
    noisy = points[points.arm != BASELINE] if len(points) else points
    clean = points[points.arm == BASELINE].set_index(["panel", "metric"]) if len(points) else points
    order = {a: i for i, a in enumerate(_order(noisy.arm))} if len(noisy) else {}
    groups = sorted(noisy.groupby(["panel", "arm", "metric"], sort=False),
                    key=lambda item: (item[0][0], order[item[0][1]], item[0][2] == "deg_avg"))
    for (panel, arm, metric), g in groups:
        g = g.sort_values("kappa")
        holds, leaves, leaves_mean, undecided = math.nan, math.nan, math.nan, False
        for r in g.itertuples():
            ok = _matches(r)
            if ok is None:
                undecided = True
                break
            if not ok:
                leaves, leaves_mean = r.kappa, r.mean
                break
            holds = r.kappa
        c = clean.loc[(panel, metric)] if (panel, metric) in clean.index else None
        rows.append({
            "panel": panel, "arm": arm, "metric": metric,
            "kappas": " ".join(f"{k:g}" for k in g.kappa), "n_seeds": int(g.n_paired.min()),
            "clean_mean": c["mean"] if c is not None else math.nan,
            "holds_to": holds, "leaves_at": leaves, "mean_at_leave": leaves_mean,
            "note": "fewer than 2 paired seeds: no interval" if undecided else "",
        })
    return pd.DataFrame(rows)


def _order(arms) -> list[str]:
    """clean, noised (σ, then α=mean, α=max), mpu by m, linear α before the other schedules."""
    return sorted(set(arms), key=name_order)


def _colors(arms: list[str]) -> dict[str, str]:
    """Each arm's series in turn from its own palette (mpu.arms: warm for one noisy copy, cool for MPU)."""
    seen = {name: 0 for name in ARMS}
    out = {}
    for a in arms:
        arm = arm_of_label(a)
        out[a] = arm.palette[seen[arm.name] % len(arm.palette)]
        seen[arm.name] += 1
    return out


def figure_break_map(points: pd.DataFrame):
    """Per panel (rows) forget_Q_A_Prob and deg_avg (columns) against κ (log axis): each arm's mean with its
    95 % interval, the clean value as a band. None unless some arm has two or more κ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from mpu_cli.report.plots import MARKERS, _plain_axes

    if not len(points):
        return None
    noisy = points[points.arm != BASELINE]
    if not len(noisy) or noisy.groupby(["panel", "arm"]).kappa.nunique().max() < 2:
        return None
    panels = sorted(points.panel.unique())
    arms = _order(noisy.arm)
    colors = _colors(arms)
    metrics = sorted(points.metric.unique(), key=lambda m: m == "deg_avg")  # the forget metric, then deg_avg
    fig, axes = plt.subplots(len(panels), len(metrics), figsize=(13.0, 3.1 * len(panels) + 0.9), squeeze=False)
    for row_axes, panel in zip(axes, panels):
        for ax, metric in zip(row_axes, metrics):
            scale = 100.0 if metric == "deg_avg" else 1.0
            clean = points[(points.panel == panel) & (points.arm == BASELINE) & (points.metric == metric)]
            if len(clean):
                c, colour = clean.iloc[0], ARMS[BASELINE].colour
                ax.axhline(scale * c["mean"], color=colour, lw=1.2, label="clean (band: its 95 %\ninterval over seeds)")
                if not math.isnan(c["low"]) and c["high"] > c["low"]:
                    ax.axhspan(scale * c["low"], scale * c["high"], color=colour, alpha=0.18, lw=0)
            measured = sorted(noisy[noisy.panel == panel].kappa.unique())
            for i, arm in enumerate(arms):
                g = noisy[(noisy.panel == panel) & (noisy.arm == arm) & (noisy.metric == metric)].sort_values("kappa")
                if not len(g):
                    continue
                half_lo = (g["mean"] - g["low"]).fillna(0.0).clip(lower=0)
                half_hi = (g["high"] - g["mean"]).fillna(0.0).clip(lower=0)
                # arms side by side at one κ: a small multiplicative offset keeps their bars apart
                shift = 1.0 + 0.035 * (i - (len(arms) - 1) / 2)
                # an arm run at only some of the κ (an extra axis) gets points, not a line across the gaps
                line = "-" if len(g) == len(measured) else "none"
                ax.errorbar(g.kappa * shift, scale * g["mean"], yerr=[scale * half_lo, scale * half_hi], capsize=2.5,
                            marker=MARKERS[i % len(MARKERS)], ms=4.5, lw=1.1, ls=line, color=colors[arm], label=arm)
            ax.set_xscale("log")
            ax.set_xticks(measured, [f"{k:g}" for k in measured])  # the κ measured, as plain numbers
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("κ (noise σ = κ·RMS(θ − θ_base) per block; log axis)", fontsize=8)
            if metric != "deg_avg":
                ax.set_ylim(0, 1)
                ax.set_ylabel(f"{metric} ({_better(metric)})", fontsize=8)
            else:
                ax.axhline(0, color="grey", lw=0.8)
                ax.set_ylabel("deg_avg vs clean, % (worse > 0)", fontsize=8)
            ax.set_title(f"{panel}: {metric} ({_better(metric)})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            _plain_axes(ax)
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="upper left", bbox_to_anchor=(0.795, 0.93),
               fontsize=8, frameon=False)
    n = points.n.max()
    fig.suptitle(f"Noised and MPU arms against clean as κ grows: mean over seeds (n ≤ {n}) ± 95 % t-interval; "
                 "green: clean", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.79, 0.96))
    return fig


def render_section(table: pd.DataFrame, plot: str | None) -> list[str]:
    """summary.md's break-map section."""
    if not len(table):
        return []
    out = ["## Break map: the largest κ at which each arm still matches clean", "",
           "Per arm and metric: `holds to` is the largest κ such that at it and at every smaller κ measured the "
           "paired 95 % interval over seeds (arm − clean for forget_Q_A_Prob; deg_avg, already relative to "
           "clean) contains 0; `leaves at` is the first κ where it does not, with the arm's mean there. "
           "Empty `holds to`: already the smallest κ differs; empty `leaves at`: no κ measured differs. With few "
           "seeds the intervals are wide: matching clean is not being equal to it.", ""]
    cols = ["panel", "arm", "metric", "kappas", "n_seeds", "clean_mean", "holds_to", "leaves_at", "mean_at_leave"]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in table.to_dict("records"):
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                v = "" if math.isnan(v) else (f"{100 * v:+.1f} %" if r["metric"] == "deg_avg" and c in
                                               ("clean_mean", "mean_at_leave") else f"{v:.4g}")
            cells.append(str(v) + (f" ({r['note']})" if c == "holds_to" and r["note"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    out += [*lines, ""]
    if plot:
        out += [f"![plot_break_map]({Path(plot).name})", ""]
    return out


def write_break_map(used: pd.DataFrame, out_dir: Path, keys: list[str], plots: bool = True) -> list[str]:
    """break_map_points.csv, break_map.csv and plot_break_map.png in out_dir when the sweep carries a break map;
    returns summary.md's section (empty when it does not)."""
    from mpu_cli.files import atomic_write_text

    if not applies(used):
        return []
    points = break_points(used, keys)
    table = break_table(points)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "break_map_points.csv", points.to_csv(index=False))
    atomic_write_text(out_dir / "break_map.csv", table.to_csv(index=False))
    plot = None
    if plots:
        fig = figure_break_map(points)
        if fig is not None:
            import matplotlib.pyplot as plt

            from mpu_cli.report.plots import _save

            plot = str(out_dir / "plot_break_map.png")
            _save(fig, plot)
            plt.close(fig)
    return render_section(table, plot)
