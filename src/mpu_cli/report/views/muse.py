"""A `make reproduce-muse-tiny` sweep folder as README's MUSE table: the target, the retrained model and a few
algorithms in each arm, on the MUSE headline metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mpu_cli.evals import benchmarks
from mpu_cli.mpu.arms import ARMS
from mpu_cli.report.views.fmt import duration, machine, markdown

ALGORITHMS = ("graddiff", "npo")  # the table's rows; the sweep's summary.md has every algorithm
METRICS = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "extraction_strength", "privleak")


def muse_markdown(folder: Path, seconds: float | None = None) -> str:
    """One row for the target, one for the retrained model, one per algorithm of ALGORITHMS, arm and κ (the first
    seed's run). seconds: how long the sweep took, for the caption."""
    runs = [d for d in sorted(Path(folder).iterdir()) if (d / "COMPLETE").is_file() and (d / "results.csv").is_file()] \
        if Path(folder).is_dir() else []
    if not runs:
        raise ValueError(f"{folder}: no finished runs (a `make reproduce-muse-tiny` sweep folder)")
    table = pd.concat([pd.read_csv(d / "results.csv").assign(folder=str(d)) for d in runs], ignore_index=True)
    summary_file = benchmarks.of_rows(table).summary_file

    def cells(values: dict) -> list[str]:
        # extraction_strength to 3 significant digits: on the embedded corpus it sits near its 1/n floor (~0.01)
        return [f"{values[m]:.1f}".replace("-", "−") if m == "privleak"
                else f"{values[m]:.3g}" if m == "extraction_strength" else f"{values[m]:.3f}" for m in METRICS]

    first = Path(table.folder.iloc[0])
    rows = [["(target)", "", *cells(json.loads((first / "target" / summary_file).read_text()))],
            ["(retrained)", "", *cells(json.loads((first / "retain" / summary_file).read_text()))]]
    for algorithm in ALGORITHMS:
        runs = table[table.algorithm == algorithm]
        for name, arm in ARMS.items():  # in report order, each noisy arm once per κ (its effective κ)
            of_arm = runs[runs.arm == name]
            for kappa in sorted(of_arm.kappa.astype(float).unique()):
                label = f"{name} κ {kappa:g}" if arm.noisy else name
                rows.append([algorithm, label, *cells(of_arm[of_arm.kappa.astype(float) == kappa].iloc[0])])
    algorithms = sorted(set(table.algorithm))
    took = f"{len(table)} runs of {', '.join(algorithms)}" + (f" in {duration(seconds)}" if seconds else "")
    return (f"`make reproduce-muse-tiny` on {machine()}, {took} (seed 0, the model's presets: 5 epochs at lr 3e-4; "
            "the sweep's summary.md has every metric):\n\n"
            + markdown(["algorithm", "arm", *METRICS], rows))
