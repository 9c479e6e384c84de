"""Sweep tables: collect the runs under a folder, add each noised/MPU run's relative degradation against its
clean run, write summary.csv and summary.md.

A *run* is a folder with ``.hydra/config.yaml`` (Hydra writes it when the run starts) or ``results.csv``.
It is *finished* when it holds both ``results.csv`` and ``TOFU_SUMMARY.json``; metrics are read from the
run's own ``TOFU_SUMMARY.json``, the configuration from its ``results.csv`` (or, for an unfinished run,
from ``.hydra/config.yaml``).

Relative degradation (a fraction; summary.md shows it in %), for every noised/MPU row against the clean
row(s) with the same model, data, split, algorithm, seed, rounds, epochs, lr, algorithm params and client
reference (several matching clean runs, e.g. one per swept κ, are averaged), signed so that **worse is
positive**:

    lower is better  (forget_Q_A_Prob, forget_Q_A_ROUGE, extraction_strength, exact_memorization):
        deg = (row - clean) / |clean|        (less forgetting than clean -> positive)
    higher is better (model_utility, retain_* / ra_* / wf_* utility metrics, forget_quality):
        deg = (clean - row) / |clean|        (less utility than clean -> positive)
    closer to 0 is better (privleak):
        deg = (|row| - |clean|) / |clean|

forget_truth_ratio (min(TR, 1/TR): its better direction depends on the reading) and mia_min_k (privleak's
raw AUC) get no degradation column. A clean value of 0 gives no degradation (NaN).

``deg_avg`` is the paper's "average degradation": the mean of deg_forget_Q_A_Prob, deg_forget_Q_A_ROUGE and
deg_model_utility. Where model_utility was not evaluated (``eval.metrics=quick``) it is the mean of what is
present, and ``deg_avg_over`` says which metrics it averages.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CONFIG_COLUMNS = (
    "model",
    "data",
    "split",
    "algorithm",
    "arm",
    "kappa",
    "m",
    "rounds",
    "epochs",
    "lr",
    "seed",
    "reference",
    "leaks_theta0",
    "params",
)
# A noised/MPU run is compared with the clean run(s) that share these.
MATCH_COLUMNS = (
    "model",
    "data",
    "split",
    "algorithm",
    "seed",
    "rounds",
    "epochs",
    "lr",
    "params",
    "reference",
)
HEADLINE = (
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "model_utility",
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "forget_quality",
    "forget_truth_ratio",
    "privleak",
    "extraction_strength",
    "exact_memorization",
)
AVG_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility")

LOWER, HIGHER, ABS = "lower", "higher", "abs"
DIRECTIONS = {
    "forget_Q_A_Prob": LOWER,
    "forget_Q_A_ROUGE": LOWER,
    "extraction_strength": LOWER,
    "exact_memorization": LOWER,
    "model_utility": HIGHER,
    "forget_quality": HIGHER,
    "retain_Q_A_Prob": HIGHER,
    "retain_Q_A_ROUGE": HIGHER,
    "retain_Truth_Ratio": HIGHER,
    "ra_Q_A_Prob_normalised": HIGHER,
    "ra_Q_A_ROUGE": HIGHER,
    "ra_Truth_Ratio": HIGHER,
    "wf_Q_A_Prob_normalised": HIGHER,
    "wf_Q_A_ROUGE": HIGHER,
    "wf_Truth_Ratio": HIGHER,
    "privleak": ABS,
}
FINISHED, UNFINISHED = "finished", "unfinished"
REQUIRED = ("results.csv", "TOFU_SUMMARY.json")


@dataclass
class Collected:
    root: Path
    table: pd.DataFrame  # one row per run (finished and unfinished), degradation columns added
    unfinished: list[tuple[str, str]] = field(default_factory=list)  # (run, what is missing)

    @property
    def finished(self) -> pd.DataFrame:
        return self.table[self.table.status == FINISHED] if len(self.table) else self.table


def find_runs(root: Path) -> list[Path]:
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".hydra")
        here = Path(dirpath)
        if "results.csv" in filenames or (here / ".hydra" / "config.yaml").is_file():
            found.append(here)
    return found


def _rel(run: Path, root: Path) -> str:
    rel = run.resolve().relative_to(root.resolve()).as_posix()
    return rel if rel != "." else run.name


def _config_row(run: Path) -> dict:
    """Config columns of a run that wrote no results.csv, from Hydra's .hydra/config.yaml (as runner does)."""
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")

        def get(key, default=None):
            try:
                value = OmegaConf.select(cfg, key, default=default)
            except Exception:  # an interpolation that no longer resolves
                return default
            return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

        arm = get("arm")
        params = get("algorithm.params", {}) or {}
        return {
            "model": get("model.name"),
            "data": get("data.name"),
            "split": get("data.split"),
            "algorithm": get("algorithm.name"),
            "arm": arm,
            "kappa": get("kappa") if arm != "clean" else 0.0,
            "m": get("m") if arm == "mpu" else 1,
            "rounds": get("rounds"),
            "epochs": get("client.epochs"),
            "lr": get("client.lr"),
            "seed": get("seed"),
            "reference": get("client.reference"),
            "leaks_theta0": get("client.reference") == "server_clean",
            "params": json.dumps(params, sort_keys=True),
        }
    except Exception:
        return {}


def read_run(run: Path, root: Path) -> dict:
    missing = [f for f in REQUIRED if not (run / f).is_file()]
    if (run / "run.json").is_file() and not (run / "COMPLETE").is_file():
        missing.append("COMPLETE")  # started by a runner that writes the marker last: not finished without it
    row: dict = {"run": _rel(run, root)}
    if missing:
        row |= _config_row(run)
        row |= {"status": UNFINISHED, "missing": ", ".join(missing)}
        return row
    try:
        results = pd.read_csv(run / "results.csv")
        summary = json.loads((run / "TOFU_SUMMARY.json").read_text())
    except Exception as e:  # a half-written or corrupt file: report it, never fail the whole table
        row |= _config_row(run)
        row |= {"status": UNFINISHED, "missing": f"unreadable results ({type(e).__name__})"}
        return row
    if len(results):
        row |= results.iloc[0].to_dict()
    row |= {k: v for k, v in summary.items() if isinstance(v, (int, float)) or v is None}
    row |= {"status": FINISHED, "missing": ""}
    return row


def relative_degradation(row_value: float, clean_value: float, direction: str) -> float:
    """Signed so that worse than clean is positive (see the module docstring)."""
    try:
        row_value, clean_value = float(row_value), float(clean_value)
    except (TypeError, ValueError):
        return math.nan
    if math.isnan(row_value) or math.isnan(clean_value) or abs(clean_value) < 1e-12:
        return math.nan
    if direction == LOWER:
        return (row_value - clean_value) / abs(clean_value)
    if direction == HIGHER:
        return (clean_value - row_value) / abs(clean_value)
    if direction == ABS:
        return (abs(row_value) - abs(clean_value)) / abs(clean_value)
    raise ValueError(f"unknown direction {direction!r}")


def _key(row: pd.Series) -> tuple:
    return tuple("" if pd.isna(row.get(c)) else str(row.get(c)) for c in MATCH_COLUMNS)


def add_degradation(df: pd.DataFrame) -> pd.DataFrame:
    """deg_<metric>, deg_avg, deg_avg_over and clean_run for every finished noised/MPU row."""
    df = df.copy()
    metrics = [m for m in DIRECTIONS if m in df.columns]
    for m in metrics:
        df[f"deg_{m}"] = math.nan
    df["deg_avg"] = math.nan
    df["deg_avg_over"] = ""
    df["clean_run"] = ""
    if not len(df):
        return df
    done = df[df.status == FINISHED]
    cleans: dict[tuple, list[int]] = {}
    for i, row in done[done.arm == "clean"].iterrows():
        cleans.setdefault(_key(row), []).append(i)
    for i, row in done[done.arm.isin(["noised", "mpu"])].iterrows():
        idx = cleans.get(_key(row))
        if not idx:
            df.at[i, "clean_run"] = "(no clean run)"
            continue
        clean = df.loc[idx, metrics].apply(pd.to_numeric, errors="coerce").mean()
        for m in metrics:
            df.at[i, f"deg_{m}"] = relative_degradation(row[m], clean[m], DIRECTIONS[m])
        used = [m for m in AVG_METRICS if m in metrics and not pd.isna(df.at[i, f"deg_{m}"])]
        if used:
            df.at[i, "deg_avg"] = sum(df.at[i, f"deg_{m}"] for m in used) / len(used)
            note = ", ".join(used)
            absent = [m for m in AVG_METRICS if m not in used]
            if absent:
                note += f" ({', '.join(absent)} not available)"
            df.at[i, "deg_avg_over"] = note
        df.at[i, "clean_run"] = "; ".join(df.loc[idx, "run"])
    return df


ARM_ORDER = {"clean": 0, "noised": 1, "mpu": 2}


def _sort_key(s: pd.Series) -> pd.Series:
    if s.name in ("kappa", "m", "seed"):
        return pd.to_numeric(s, errors="coerce")
    if s.name == "arm":
        return s.map(lambda a: ARM_ORDER.get(a, 9))
    return s.astype(str)


def collect(root: Path) -> Collected:
    root = Path(root)
    rows = [read_run(run, root) for run in find_runs(root)]
    df = pd.DataFrame(rows)
    if not len(df):
        return Collected(root, df, [])
    for c in CONFIG_COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = add_degradation(df)
    metric_cols = [
        c
        for c in df.columns
        if c not in CONFIG_COLUMNS
        and c not in ("run", "status", "missing")
        and not c.startswith(("deg_", "target_", "time_"))
        and c != "clean_run"
    ]
    head = [c for c in HEADLINE if c in metric_cols]
    order = (
        ["run", "status", *CONFIG_COLUMNS]
        + head
        + [c for c in metric_cols if c not in head]
        + [c for c in df.columns if c.startswith("deg_")]
        + ["clean_run"]
        + sorted(c for c in df.columns if c.startswith("target_"))
        + sorted(c for c in df.columns if c.startswith("time_"))
        + ["missing"]
    )
    df = df[order]
    df = df.sort_values(["status", "algorithm", "arm", "kappa", "m", "seed", "run"], key=_sort_key)
    df = df.reset_index(drop=True)
    unfinished = [(r.run, r.missing) for r in df[df.status == UNFINISHED].itertuples()]
    return Collected(root, df, unfinished)


# --------------------------------------------------------------------------------------------- markdown
def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{100 * v:+.2f}%" if pct else f"{v:.4g}"
    return str(v)


def md_table(df: pd.DataFrame, columns: list[str], pct: tuple[str, ...] = ()) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df.iterrows():
        lines.append(
            "| " + " | ".join(_fmt(row.get(c), c in pct).replace("|", "\\|") for c in columns) + " |"
        )
    return "\n".join(lines)


GROUP_COLUMNS = ("model", "data", "split", "algorithm", "arm", "kappa", "m", "rounds", "epochs")


def aggregate(done: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds (and repeats) of each configuration."""
    metrics = [m for m in (*HEADLINE, "deg_avg") if m in done.columns and done[m].notna().any()]
    rows = []
    for key, g in done.groupby(list(GROUP_COLUMNS), dropna=False, sort=True):
        row = dict(zip(GROUP_COLUMNS, key)) | {"n": len(g)}
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce").dropna()
            row[m] = vals.mean() if len(vals) else math.nan
            row[f"{m}_std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(list(GROUP_COLUMNS), key=_sort_key).reset_index(drop=True) if len(out) else out


def _mean_std(row, m: str, pct: bool) -> str:
    mean, std = row.get(m), row.get(f"{m}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    out = _fmt(float(mean), pct)
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        out += f" ± {100 * std:.2f}%" if pct else f" ± {std:.2g}"
    return out


def render_markdown(col: Collected, plots: list[str] = ()) -> str:
    done = col.finished
    n_done, n_open = len(done), len(col.unfinished)
    out = [
        f"# Sweep summary: {col.root}",
        "",
        (
            f"{n_done} finished run(s), {n_open} unfinished. Degradation: relative to the clean run with the "
            "same model, data, split, algorithm, seed and schedule; **worse than clean is positive**; "
            "`deg_avg` is the mean over forget_Q_A_Prob, forget_Q_A_ROUGE and model_utility (the paper's "
            "average degradation)."
        ),
        "",
    ]
    if n_done:
        metrics = [m for m in HEADLINE if m in done.columns and done[m].notna().any()]
        over = sorted({v for v in done.get("deg_avg_over", pd.Series(dtype=str)) if v})
        if over:
            out += [f"`deg_avg` averages: {'; '.join(over)}.", ""]
        agg = aggregate(done)
        varying = [
            c for c in ("model", "data", "split", "rounds", "epochs") if done[c].astype(str).nunique() > 1
        ]
        cols = [*varying, "algorithm", "arm", "kappa", "m", "n", *metrics, "deg_avg"]
        cols = [c for c in cols if c in agg.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in agg.iterrows():
            cells = [
                _mean_std(row, c, c == "deg_avg") if c in (*metrics, "deg_avg") else _fmt(row[c])
                for c in cols
            ]
            lines.append("| " + " | ".join(cells) + " |")
        out += ["## Mean ± std over seeds", "", *lines, ""]
        degs = [
            f"deg_{m}" for m in AVG_METRICS if f"deg_{m}" in done.columns and done[f"deg_{m}"].notna().any()
        ]
        cols = ["run", *varying, "algorithm", "arm", "kappa", "m", "seed", *metrics, *degs, "deg_avg"]
        cols = [c for c in cols if c in done.columns]
        out += ["## Runs", "", md_table(done, cols, pct=tuple(c for c in cols if c.startswith("deg_"))), ""]
    if n_open:
        out += ["## Unfinished runs", ""] + [
            f"- `{run}`: missing {missing}" for run, missing in col.unfinished
        ]
        out += [""]
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)


def write_summary(root: Path, out_dir: Path | None = None, plots: bool = True) -> Collected:
    """Collect the runs under `root`; write summary.csv, summary.md and plots into `out_dir` (default: root)."""
    from mpu_cli.files import atomic_write_text

    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    col = collect(root)
    written = []
    if plots and len(col.finished):
        from mpu_cli.report.plots import write_plots

        written = write_plots(col.finished, out_dir)
    atomic_write_text(out_dir / "summary.csv", col.table.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", render_markdown(col, written))
    return col
