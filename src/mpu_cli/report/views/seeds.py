"""A sweep over algorithms, arms, κ and seeds (e.g. `make reproduce-smollm2`) as one table: per algorithm, arm
and κ each quick TOFU metric's mean over seeds with its 95 % t-interval, and deg_avg against the clean run of the
same seed (paired) with its interval and verdict."""

from __future__ import annotations

import math
from pathlib import Path

from mpu_cli.mpu.arms import arm_of, order
from mpu_cli.report.stats import t_interval
from mpu_cli.report.tables import collect
from mpu_cli.report.views.fmt import g, markdown

METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE")


def seeds_markdown(root: Path) -> str:
    """The table of the finished runs under `root`; ValueError when there are none."""
    col = collect(root)
    used = col.used
    if not len(used):
        raise ValueError(f"{root}: no finished runs")

    def cell(values) -> str:
        iv = t_interval(values)
        return g(iv.mean) if iv.n < 2 else f"{g(iv.mean)} [{g(iv.low)}, {g(iv.high)}]"

    deg = col.paired[col.paired.metric == "deg_avg"] if len(col.paired) else col.paired
    rows = []
    for (algorithm, arm, kappa), group in used.groupby(["algorithm", "arm", "kappa"], sort=False):
        d = deg
        for key, value in (("algorithm", algorithm), ("arm", arm), ("kappa", kappa)):
            d = d[d[key] == value] if key in d else d  # paired carries the keys that vary in the sweep
        degradation = "–"
        if len(d) and math.isnan(d.iloc[0].diff_mean):
            degradation = d.iloc[0].verdict
        elif len(d):
            r = d.iloc[0]
            ci = "" if math.isnan(r.ci_low) else f" [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
            degradation = f"{100 * r.diff_mean:+.1f} %{ci} ({r.verdict})"
        rows.append([algorithm, arm, g(float(kappa)) if arm_of(arm).noisy else "–", str(len(group)),
                     *(cell(group[m]) for m in METRICS), degradation])
    rows.sort(key=lambda r: (r[0], float(r[2]) if r[2] != "–" else -1.0, order(r[1])))
    done = col.finished
    target = {m: done[f"target_{m}"].iloc[0] for m in METRICS if f"target_{m}" in done}
    retain = {m: done[f"retainmodel_{m}"].iloc[0] for m in METRICS if f"retainmodel_{m}" in done}
    ref = "; ".join(f"{name}: " + " / ".join(g(v.get(m)) for m in METRICS)
                    for name, v in (("target", target), ("retain model", retain)) if v)
    header = ["algorithm", "arm", "κ", "seeds", "forget Prob", "forget ROUGE", "retain Prob", "retain ROUGE",
              "deg_avg vs clean [95 % CI]"]
    ref = f" Reference points (forget Prob / ROUGE, retain Prob / ROUGE) — {ref}." if ref else ""
    return (f"{len(done)} runs ({len(col.failed)} failed); mean over seeds [95 % t-interval]; deg_avg over "
            f"forget Prob and ROUGE (quick evaluation: no model_utility), worse than clean > 0.{ref}\n\n"
            + markdown(header, rows))
