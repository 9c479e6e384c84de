"""A finished break-map sweep (`make reproduce-break`: break_map_points.csv and break_map.csv, written by
report/breakmap.py) as one table: forget Prob per algorithm, arm and κ, and how far each arm holds."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from mpu_cli.mpu.arms import BASELINE
from mpu_cli.report.views.fmt import duration, markdown

FILES = ("break_map_points.csv", "break_map.csv")


def break_markdown(folder: Path, seconds: float | None = None) -> str:
    """Per algorithm and arm the forget_Q_A_Prob mean ± 95 % half-interval over seeds at each κ, bold where the
    paired interval against clean excludes 0, and `holds to` for forget Prob / deg_avg. seconds: how long the
    sweep took, for the caption."""
    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} holds no {missing[0]} (a `make reproduce-break` folder)")
    points, table = pd.read_csv(folder / FILES[0]), pd.read_csv(folder / FILES[1])
    forget = points[points.metric == "forget_Q_A_Prob"]
    kappas = sorted(forget.kappa.dropna().unique())

    def cell(r) -> str:
        half = r["high"] - r["mean"] if not math.isnan(r["high"]) else None
        text = f"{r['mean']:.3f}" + (f" ± {half:.2g}" if half is not None else "")
        differs = r.get("verdict") in ("better", "worse")
        return f"**{text}**" if differs else text

    def held(r) -> str:
        if isinstance(r.note, str) and r.note:
            return "no interval"
        return f"<{str(r.kappas).split()[0]}" if math.isnan(r.holds_to) else f"{r.holds_to:g}"

    holds = {(r.panel, r.arm, r.metric): held(r) for r in table.itertuples()}
    rows = []
    for panel in sorted(forget.panel.unique()):
        clean = forget[(forget.panel == panel) & (forget.arm == BASELINE)]
        clean_text = cell(clean.iloc[0]) if len(clean) else "–"
        arms = [a for a in dict.fromkeys(table[table.panel == panel].arm)]
        for i, arm in enumerate(arms):
            at = {r.kappa: cell(r._asdict()) for r in forget[(forget.panel == panel) & (forget.arm == arm)].itertuples()}
            to = [holds.get((panel, arm, m)) for m in ("forget_Q_A_Prob", "deg_avg")]
            rows.append([panel if i == 0 else "", clean_text if i == 0 else "", arm,
                         *(at.get(k, "") for k in kappas),
                         " / ".join(v or "–" for v in to)])
    n = int(points.n.max())
    where = f"`make reproduce-break` on {os.cpu_count()} CPU cores" + (f", {duration(seconds)}" if seconds else "")
    caption = (f"{where} (quick eval, {n} seed{'s' if n != 1 else ''}; the sweep folder's summary.md has every "
               "metric): forget_Q_A_Prob, mean ± 95 % half-interval over seeds; **bold**: the paired interval "
               "against the clean run of the same seed excludes 0; `holds to`: the largest κ up to which every κ "
               "measured still matches clean, for forget Prob / deg_avg (<κ: not even the smallest κ measured).")
    header = ["algorithm", "clean", "arm", *(f"κ={k:g}" for k in kappas), "holds to"]
    return caption + "\n\n" + markdown(header, rows)
