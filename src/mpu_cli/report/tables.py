"""Sweep tables: collect the runs under a folder, group them by the settings that differ, pair each
noised/MPU run with its clean run, and write summary.csv, paired.csv and summary.md.

How runs are read: report/runs.py. How they are grouped, deduplicated and matched with their clean baseline,
and the relative degradation: report/compare.py. The paired statistics and verdicts: report/stats.py. Where
each arm leaves clean over κ (break_map.csv, plot_break_map.png): report/breakmap.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mpu_cli.evals import benchmarks
from mpu_cli.evals.metric_registry import ABS, DIRECTION_WORDS
from mpu_cli.mpu.survival import RESULT_COLUMNS
from mpu_cli.report.compare import (
    ORDER,
    add_degradation,
    base_key,
    group_key,
    grouping_keys,
    mark_duplicates,
    relative_degradation,  # noqa: F401 - re-exported: the reports' public helpers live here
    replicate,
    seeded,
    settings,
    sort_key,
)
from mpu_cli.report.runs import FAILED, FINISHED, UNFINISHED, find_runs, read_run
from mpu_cli.report.stats import paired_differences

_PRIVATE = ("_group", "_base", "_replicate", "_seeded")
# the noise that survived publication, per run (results.csv); the per-block lists stay in results.csv
SURVIVAL_SCALARS = tuple(c for c in RESULT_COLUMNS if not c.endswith("_blocks"))


@dataclass
class Collected:
    root: Path
    table: pd.DataFrame  # one row per run (every status); finished ones with degradation columns
    keys: list[str] = field(default_factory=list)  # the grouping keys: settings that differ between runs
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)  # stats.paired_differences
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run, its error line)
    unfinished: list[tuple[str, str]] = field(default_factory=list)  # (run, what is missing)

    @property
    def finished(self) -> pd.DataFrame:
        return self.table[self.table.status == FINISHED] if len(self.table) else self.table

    @property
    def used(self) -> pd.DataFrame:
        """Finished runs that count: duplicates left out."""
        done = self.finished
        return done[done.duplicate_of == ""] if len(done) else done


def collect(root: Path, failed: list[tuple[str, str]] = ()) -> Collected:
    """The runs under `root`; `failed`: (folder, error line) of jobs known to have failed (a sweep's own), listed
    even where they left no run folder to find (one that could not be claimed, say)."""
    root = Path(root)
    runs = find_runs(root)
    records = [read_run(run, root) for run in runs]
    found = {run.resolve() for run in runs}
    records += [{"run": _job_name(where, root), "status": FAILED, "error": message, "config": {}, "results": {},
                 "metrics": {}} for where, message in failed if Path(where).resolve() not in found]
    if not records:
        return Collected(root, pd.DataFrame())
    metric_names = set(benchmarks.metric_names()) | {k for r in records for k in r["metrics"]}
    rows, setting_rows = [], []
    for rec in records:
        st = settings(rec["config"], rec["results"], metric_names)
        extra = {k: v for k, v in rec["results"].items()
                 if str(k).startswith(("target_", "time_", "retainmodel_")) or k in SURVIVAL_SCALARS}
        rows.append({"run": rec["run"], "status": rec["status"], "error": rec["error"]} | st
                    | {"seeded": "yes" if seeded(st) else "no"} | rec["metrics"] | extra)
        setting_rows.append((rec["status"], st))
    df = pd.DataFrame(rows)
    keys = grouping_keys([st for status, st in setting_rows if status == FINISHED])
    if df.seeded.nunique() > 1:
        keys.append("seeded")
    for c in (*ORDER, "seed"):
        if c not in df:
            df[c] = None
    metrics = [m for m in metric_names if m in df.columns]
    df["duplicate_of"] = ""
    done = df[df.status == FINISHED].copy()
    paired = pd.DataFrame()
    if len(done):
        st_rows = [dict(r) for _, r in done.iterrows()]
        done["_group"] = [group_key(r, keys) for r in st_rows]
        done["_base"] = [base_key(r, keys) for r in st_rows]
        done["_replicate"] = [replicate(r) for r in st_rows]
        done["_seeded"] = [seeded(r) for r in st_rows]
        done["duplicate_of"] = mark_duplicates(done)
        done = add_degradation(done, metrics)
        head = [m for m in benchmarks.headline() if m in done and done[m].notna().any()]
        paired = paired_differences(done[done.duplicate_of == ""], keys, head)
        done = done.drop(columns=list(_PRIVATE))
    table = pd.concat([done, df[df.status != FINISHED]], ignore_index=True) if len(done) else df
    table = table.sort_values(["status", *[k for k in keys if k in table], "seed", "run"], key=sort_key)
    table = table[_column_order(table, keys, metrics)].reset_index(drop=True)
    failed = [(r.run, r.error) for r in table[table.status == FAILED].itertuples()]
    unfinished = [(r.run, r.error) for r in table[table.status == UNFINISHED].itertuples()]
    return Collected(root, table, keys, paired, failed, unfinished)


def _column_order(df: pd.DataFrame, keys: list[str], metrics: list[str]) -> list[str]:
    head = ["run", "status", *[k for k in ORDER if k in df], *[k for k in keys if k not in ORDER], "seed"]
    head += [c for c in ("client.seed",) if c in df]
    headline = benchmarks.headline()
    mets = [m for m in headline if m in df] + sorted(m for m in metrics if m not in headline)
    degs = [c for c in df if c.startswith("deg_")]
    tail = ["clean_run", "duplicate_of", "error"]
    rest = sorted(c for c in df if c not in {*head, *mets, *degs, *tail}
                  and not c.startswith(("target_", "time_", "retainmodel_")))
    ordered = head + mets + degs + [c for c in tail if c in df] + sorted(c for c in df if c.startswith("target_"))
    ordered += sorted(c for c in df if c.startswith(("retainmodel_", "time_"))) + rest
    return list(dict.fromkeys(c for c in ordered if c in df))


# --------------------------------------------------------------------------------------------- markdown
def _fmt(v, pct: bool = False, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = float(v)
        if pct:
            return f"{100 * v:+.2f} %"
        if signed:
            return f"{v:+.3g}"
        return f"{v:.4g}"
    return str(v)


def md_table(df: pd.DataFrame, columns: list[str], pct: tuple[str, ...] = ()) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row.get(c), c in pct).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def aggregate(used: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and standard deviation over the seeds of each group (duplicates already left out)."""
    metrics = [m for m in (*benchmarks.headline(), "deg_avg") if m in used.columns and used[m].notna().any()]
    rows = []
    by = keys or ["arm"]
    for _, g in used.groupby([used[k].map(lambda v: json.dumps(v, default=str)) for k in by], sort=False):
        row = {k: g.iloc[0].get(k) for k in by} | {"n": len(g)}
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce").dropna()
            row[m] = vals.mean() if len(vals) else math.nan
            row[f"{m}_std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(by, key=sort_key).reset_index(drop=True) if len(out) else out


def _mean_std(row, m: str, pct: bool) -> str:
    mean, std = row.get(m), row.get(f"{m}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    out = _fmt(float(mean), pct)
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        out += f" ± {100 * std:.2f} %" if pct else f" ± {std:.2g}"
    return out


def _interval(row, pct: bool) -> str:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return ""
    if pct:
        return f"[{100 * lo:+.2f}, {100 * hi:+.2f}] %"
    return f"[{lo:+.3g}, {hi:+.3g}]"


def _label_columns(keys: list[str]) -> list[str]:
    """The grouping keys a noised/MPU comparison is told apart by (arm keys included)."""
    return [k for k in keys if k != "seeded"] + (["seeded"] if "seeded" in keys else [])


def render_paired(paired: pd.DataFrame, keys: list[str]) -> list[str]:
    if not len(paired):
        return []
    label = [k for k in _label_columns(keys) if k in paired]
    out = [
        "## Arm vs clean, paired over seeds",
        "",
        "Each noised/MPU run is paired with the clean run of the same seed and the same settings apart from "
        "the arm's own (κ, m, server.*). Per metric: the mean over seeds of the paired difference arm − clean "
        "(privleak: |arm| − |clean|), its 95 % t-interval, and a verdict: `= clean` when the interval contains "
        "0, else better / worse. `clean sd` is the noise floor: the clean arm's own spread across seeds. "
        "A difference inside the noise floor is no difference, and among many comparisons about one interval "
        "in twenty misses 0 by chance alone.",
        "",
        "### deg_avg (relative degradation vs clean, worse > 0)",
        "",
    ]
    deg = paired[paired.metric == "deg_avg"]
    cols = [*label, "n", "deg_avg", "95 % CI", "verdict", "|deg_avg| < 1 %", "clean sd"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in deg.iterrows():
        cells = [_fmt(r.get(k)) for k in label] + [
            str(int(r.n)), _fmt(r.diff_mean, pct=True), _interval(r, pct=True), r.verdict, r.within_1pct,
            _fmt(r.clean_sd, pct=True).lstrip("+")]
        lines.append("| " + " | ".join(cells) + " |")
    out += [*lines, ""]
    for metric in [m for m in benchmarks.headline() if m in set(paired.metric)]:
        rows = paired[paired.metric == metric]
        if rows.arm_mean.isna().all():
            continue
        direction = DIRECTION_WORDS.get(benchmarks.directions().get(metric), "no better direction")
        diff = "Δ|·|" if benchmarks.directions().get(metric) == ABS else "Δ"
        cols = [*label, "n", "clean", "arm", diff, "95 % CI", "verdict", "clean sd"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in rows.iterrows():
            cells = [_fmt(r.get(k)) for k in label] + [
                str(int(r.n)), _fmt(r.clean_mean), _fmt(r.arm_mean), _fmt(r.diff_mean, signed=True),
                _interval(r, pct=False), r.verdict, _fmt(r.clean_sd)]
            lines.append("| " + " | ".join(cells) + " |")
        out += [f"### {metric} ({direction})", "", *lines, ""]
    return out


def _constants(col: Collected) -> str:
    done = col.finished
    shown = [c for c in (*ORDER, "rounds", "client.epochs", "client.lr", "target_hash")
             if c in done and c not in col.keys and done[c].notna().any()]
    return ", ".join(f"{c}={_fmt(done[c].iloc[0])}" for c in shown)


def render_markdown(col: Collected, plots: list[str] = (), sections: list[str] = ()) -> str:
    """sections: more markdown lines (the break map's) before the plots."""
    done, used = col.finished, col.used
    n_dup = int((done.duplicate_of != "").sum()) if len(done) else 0
    out = [
        f"# Sweep summary: {col.root}",
        "",
        f"{len(done)} finished run(s) ({n_dup} duplicate), {len(col.failed)} failed, "
        f"{len(col.unfinished)} unfinished.",
        "",
    ]
    if len(done):
        bench = benchmarks.of_rows(done)
        averaged = bench.deg_avg
        out += [
            "Runs are grouped by the settings that differ between them: "
            + (", ".join(f"`{k}`" for k in col.keys) if col.keys else "(none: one setting)")
            + ". The same for every run: " + (_constants(col) or "—") + ".",
            "",
            "Degradation is relative to the clean run with the same seed and settings; **worse than clean is "
            "positive**; `deg_avg` is the mean over " + ", ".join(averaged)
            + f" ({bench.deg_avg_note})"
            + " over what was evaluated.",
            "",
        ]
        if n_dup:
            out += [f"- {n_dup} run(s) repeat another run with the same settings and seed: shown once below "
                    "(the copy is listed in `duplicate_of`), never averaged as seeds.", ""]
        if "seeded" in col.keys:
            out += ["- Runs without a seed (secrets from a CSPRNG) are kept apart from seeded runs.", ""]
        out += render_paired(col.paired, col.keys)
        agg = aggregate(used, col.keys)
        metrics = [m for m in benchmarks.headline() if m in used and used[m].notna().any()]
        label = [k for k in _label_columns(col.keys) if k in agg] or (["arm"] if "arm" in agg else [])
        cols = [*label, "n", *metrics, "deg_avg"]
        cols = [c for c in cols if c in agg.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, row in agg.iterrows():
            cells = [_mean_std(row, c, c == "deg_avg") if c in (*metrics, "deg_avg") else _fmt(row[c])
                     for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        out += ["## Mean ± std over seeds", "", *lines, ""]
        degs = [f"deg_{m}" for m in averaged if f"deg_{m}" in done and done[f"deg_{m}"].notna().any()]
        cols = ["run", *[k for k in _label_columns(col.keys) if k in done], "seed", *metrics, *degs, "deg_avg",
                "duplicate_of"]
        cols = [c for c in dict.fromkeys(cols) if c in done.columns]
        out += ["## Runs", "", md_table(done, cols, pct=tuple(c for c in cols if c.startswith("deg_"))), ""]
    if col.failed:
        out += ["## Failed runs", ""] + [f"- `{run}`: {error}" for run, error in col.failed] + [""]
    if col.unfinished:
        out += ["## Unfinished runs", ""] + [f"- `{run}`: {missing}" for run, missing in col.unfinished] + [""]
    out += list(sections)
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)


def _job_name(where: str, root: Path) -> str:
    path = Path(where).resolve()
    return path.relative_to(root.resolve()).as_posix() if path.is_relative_to(root.resolve()) else str(where)


def write_summary(root: Path, out_dir: Path | None = None, plots: bool = True,
                  failed: list[tuple[str, str]] = ()) -> Collected:
    """Collect the runs under `root` (and the `failed` jobs, see `collect`); write summary.csv, paired.csv,
    summary.md and plots into `out_dir` (nothing when there is no run)."""
    from mpu_cli.files import atomic_write_text

    root = Path(root)
    out_dir = Path(out_dir) if out_dir is not None else root
    col = collect(root, failed)
    if not len(col.table):  # nothing to summarise: a summary already there stays as it is
        return col
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if plots and len(col.used):
        from mpu_cli.report.plots import write_plots

        written = write_plots(col.used, out_dir, col.keys)
    sections = []
    if len(col.used):  # a sweep over κ: where each arm leaves clean (report/breakmap.py)
        from mpu_cli.report.breakmap import write_break_map

        sections = write_break_map(col.used, out_dir, col.keys, plots=plots)
    atomic_write_text(out_dir / "summary.csv", col.table.to_csv(index=False))
    atomic_write_text(out_dir / "paired.csv", col.paired.to_csv(index=False))
    atomic_write_text(out_dir / "summary.md", render_markdown(col, written, sections))
    return col
