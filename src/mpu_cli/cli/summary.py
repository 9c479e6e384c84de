"""What `mpu-run` prints when a run ends: the headline metrics, target → unlearned (and the retain model), the
better direction of each, where the results are and how long it took."""
from __future__ import annotations

import json
import math
from pathlib import Path

from mpu_cli.evals import benchmarks
from mpu_cli.mpu.arms import arm_label

ARROWS = {"lower": "↓ lower", "higher": "↑ higher", "abs": "→ 0"}


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    v = float(v)
    return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def end_of_run(out: Path, row: dict) -> str:
    """The compact table (plain text, fixed width) for a finished run directory and its results row."""
    bench = benchmarks.of_row(row)
    summary_file = bench.summary_file
    retain = {}
    if (Path(out) / "retain" / summary_file).is_file():
        retain = json.loads((Path(out) / "retain" / summary_file).read_text())
    metrics = [m for m in bench.headline if row.get(m) is not None]
    head = f"{'metric':<20} {'better':<9} {'target':>8} {'→ unlearned':>12}" + (f" {'retain':>8}" if retain else "")
    lines = [head, "-" * len(head)]
    for m in metrics:
        cells = f"{m:<20} {ARROWS.get(bench.directions.get(m), ''):<9} {_num(row.get(f'target_{m}')):>8} {_num(row[m]):>12}"
        if retain:
            cells += f" {_num(retain.get(m)):>8}"
        lines.append(cells)
    what = f"{row.get('algorithm')} · {arm_label(row)}"
    seed = row.get("seed") or "unseeded"  # the seed's public tag (run/seed_tag.py)
    lines.insert(0, f"mpu-run: done: {what} · {seed} · {row.get('time_total_s', 0):.1f} s")
    lines.append(f"results: {Path(out)}  (results.csv, {summary_file}; `mpu-report {Path(out).parent}`"
                 " tabulates a folder of runs)")
    return "\n".join(lines)
