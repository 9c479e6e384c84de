"""The cost benchmark's bench.csv (scripts/bench.py) as a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mpu_cli.report.views.fmt import g, markdown

FILE = "bench.csv"


def bench_markdown(folder: Path) -> str:
    """The folder's bench.csv as a table: one row per run, the columns that hold a value."""
    csv = Path(folder) / FILE
    if not csv.is_file():
        raise ValueError(f"{folder} holds no {FILE} (a `python scripts/bench.py --out DIR` folder)")
    df = pd.read_csv(csv).dropna(axis=1, how="all")
    rows = [[g(v) if isinstance(v, float) else str(v) for v in r] for r in df.itertuples(index=False)]
    return markdown(list(df.columns), rows)
