"""Paired statistics of each arm against its clean baseline, over seeds.

For a group of noised/MPU runs (one setting, several seeds) and each headline metric, the per-seed paired
difference d_s = arm_s − clean_s (for privleak, whose best value is 0: |arm_s| − |clean_s|) and, for deg_avg,
the per-seed relative degradation itself. Over the n seeds: the mean, the sample standard deviation and the
95 % Student-t interval mean ± t_{0.975, n−1} · sd / √n. Verdicts:

- "= clean" when the interval contains 0, else "better" / "worse" in the metric's own direction (for
  forget_truth_ratio and mia_min_k, which have none: "higher" / "lower");
- the paper's "|deg_avg| < 1 %": "yes" when the whole interval lies inside (−1 %, 1 %), "no" when it lies
  wholly outside, "undecided" otherwise;
- with one seed there is no interval, and the verdict says so ("1 seed: no interval").

The noise floor beside each difference is the clean arm's own spread: the standard deviation over its seeds
of the metric (and of each clean seed's deg_avg against the clean mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mpu_cli.evals import benchmarks
from mpu_cli.evals.metric_registry import ABS, HIGHER, LOWER
from mpu_cli.mpu.arms import BASELINE, NOISY
from mpu_cli.report.compare import deg_average, relative_degradation, sort_key

LEVEL = 0.95
PAPER_BAND = 0.01  # the paper's "within 1 %" of the noise-free result
ONE_SEED = "1 seed: no interval"


@dataclass
class Interval:
    mean: float
    n: int
    sd: float
    low: float
    high: float


def t_interval(values, level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of the finite values (low/high NaN with fewer than two)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return Interval(math.nan, 0, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, 1, math.nan, math.nan, math.nan)
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, n, sd, mean - half, mean + half)


def verdict(iv: Interval, direction: str | None) -> str:
    """'= clean', 'better' or 'worse' (direction None: 'higher' / 'lower') for a difference arm − clean
    (direction LOWER / ABS: positive is worse; HIGHER: positive is better)."""
    if iv.n == 0:
        return "no paired seeds"
    if iv.n == 1:
        return ONE_SEED
    if iv.low <= 0 <= iv.high:
        return "= clean"
    up = iv.low > 0
    if direction is None:
        return "higher" if up else "lower"
    if direction == HIGHER:
        return "better" if up else "worse"
    return "worse" if up else "better"


def paper_criterion(iv: Interval, band: float = PAPER_BAND) -> str:
    """The paper's |deg_avg| < 1 %, judged on the interval of deg_avg."""
    if iv.n < 2:
        return ONE_SEED if iv.n == 1 else "no paired seeds"
    if -band < iv.low and iv.high < band:
        return "yes"
    if iv.low >= band or iv.high <= -band:
        return "no"
    return "undecided"


def _difference(metric: str, arm_value, clean_value) -> float:
    try:
        a, c = float(arm_value), float(clean_value)
    except (TypeError, ValueError):
        return math.nan
    return abs(a) - abs(c) if benchmarks.directions().get(metric) == ABS else a - c


def _clean_floor(cleans: pd.DataFrame, metric: str) -> float:
    """The clean arm's own seed-to-seed spread of a metric (of deg_avg: each seed against the clean mean)."""
    if metric != "deg_avg":
        vals = pd.to_numeric(cleans[metric], errors="coerce").dropna() if metric in cleans else []
        return float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
    names = benchmarks.of_rows(cleans).deg_avg
    directions = benchmarks.directions()
    means = {m: pd.to_numeric(cleans[m], errors="coerce").mean() for m in names if m in cleans}
    degs = [deg_average({m: relative_degradation(row[m], means[m], directions[m]) for m in means}, names)[0]
            for _, row in cleans.iterrows()]
    degs = [d for d in degs if not math.isnan(d)]
    return float(np.std(degs, ddof=1)) if len(degs) > 1 else math.nan


def paired_differences(used: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per (noised/MPU group, metric): n, clean and arm means, the difference's mean, sd and 95 %
    interval, the verdict (and for deg_avg the paper's criterion) and the clean arm's noise floor.
    `used` holds the finished, non-duplicate runs with clean_run and deg_avg filled in."""
    rows = []
    by_run = used.set_index("run")
    noisy = used[used.arm.isin(NOISY)]
    for _, group in noisy.groupby("_group", sort=False):
        first = group.iloc[0]
        label = {k: first.get(k) for k in keys}
        paired = group[group.clean_run.isin(by_run.index)]
        cleans_paired = by_run.loc[paired.clean_run] if len(paired) else by_run.iloc[:0]
        all_cleans = used[(used.arm == BASELINE) & (used._base == first._base)]
        for metric in [*metrics, "deg_avg"]:
            if metric == "deg_avg":
                diffs = pd.to_numeric(paired.deg_avg, errors="coerce").tolist()
                clean_mean = arm_mean = math.nan
            else:
                diffs = [_difference(metric, a, c) for a, c in zip(paired[metric], cleans_paired[metric])]
                clean_mean = pd.to_numeric(cleans_paired[metric], errors="coerce").mean()
                arm_mean = pd.to_numeric(paired[metric], errors="coerce").mean()
            iv = t_interval(diffs)
            direction = benchmarks.directions().get(metric, LOWER if metric == "deg_avg" else None)
            row = label | {
                "metric": metric, "n": iv.n, "clean_mean": clean_mean, "arm_mean": arm_mean,
                "diff_mean": iv.mean, "diff_sd": iv.sd, "ci_low": iv.low, "ci_high": iv.high,
                "verdict": verdict(iv, direction), "clean_sd": _clean_floor(all_cleans, metric),
                "clean_n": len(all_cleans),
            }
            row["within_1pct"] = paper_criterion(iv) if metric == "deg_avg" else ""
            if not len(paired):
                row["verdict"] = "no clean run with the same settings and seed"
            rows.append(row)
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    order = [k for k in keys if k in out]
    return out.sort_values(order, key=sort_key, kind="stable").reset_index(drop=True) if order else out
