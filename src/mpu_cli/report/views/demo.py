"""`make demo`'s run measured at several thread counts (one run folder per count, threads<N>/) as a table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from mpu_cli.evals import benchmarks
from mpu_cli.report.views.fmt import machine, markdown

DEMO_ARGS = ("algorithm=npo", "kappa=0.01", "m=2", "seed=0")  # `make demo`'s run, seeded
FOLDER = "threads{}"  # the run at OMP_NUM_THREADS=N


def demo_markdown(folder: Path) -> str:
    """Per thread count: the target's and the unlearned model's forget Prob and model utility, the retain
    model's privleak, and the target's content hash (equal hashes: bit-identical prepared targets)."""
    folder = Path(folder)
    threads = sorted(int(m.group(1)) for d in (folder.iterdir() if folder.is_dir() else ())
                     if (m := re.fullmatch(FOLDER.format(r"(\d+)"), d.name)))
    if not threads:
        raise ValueError(f"{folder} holds no {FOLDER.format('<N>')}/ run (a `readme_tables.py --tables demo` folder)")
    rows = []
    for t in threads:
        out = folder / FOLDER.format(t)
        bench = benchmarks.of_folder(out)
        if not (out / "COMPLETE").is_file() or bench is None:
            raise ValueError(f"{out}: no finished run")
        summary = {k: json.loads((out / sub / bench.summary_file).read_text())
                   for k, sub in (("target", "target"), ("unlearned", "."), ("retain", "retain"))}
        target_hash = str(pd.read_csv(out / "results.csv").iloc[0]["target_hash"])
        forget = bench.forget_metric
        rows.append([str(t), f"{summary['target'][forget]:.3f} → {summary['unlearned'][forget]:.3f}",
                     f"{summary['target']['model_utility']:.3f} → {summary['unlearned']['model_utility']:.3f}",
                     f"{summary['retain']['privleak']:.1f}", f"`{target_hash[:12]}`"])
    where = machine(" and ".join(map(str, threads)))
    return (f"`mpu-run {' '.join(DEMO_ARGS)}` (`make demo`'s run) on {where}, the target and retain model "
            "prepared once (one thread, an empty cache):\n\n"
            + markdown(["OMP_NUM_THREADS", f"{forget} target → unlearned", "model_utility target → unlearned",
                        "retain model privleak", "target hash"], rows))
