"""Which runs are the same experiment, which are repeats, and which clean run each arm is compared with.

- **Settings** of a run: every leaf of its resolved configuration, except the seeds (they make the repeats),
  what does not change its numbers (where it ran, how it was named, cached or split into processes) and
  model.target, which is identified by the target's content hash instead. Keys that do not apply to the
  run's arm are blanked: a clean run has no κ, m or server settings, one noisy copy has no α schedule (unless
  server.noised_alpha gives it the mean / largest α of m MPU copies: then m and the schedule stay), MPU has no
  server.noised_alpha.
- **Grouping keys** of a folder: the settings whose values differ between its finished runs. Runs with equal
  grouping keys form a group; their repeats are told apart by the seed (seed, client.seed).
- **Duplicates**: runs of one group with the same seed (and clean runs without a seed, which are
  deterministic) are the same run twice: the first is used, the others are marked `duplicate_of`.
  Unseeded runs are never pooled with seeded ones ("seeded" is part of the group).
- **Clean baseline** of a noised/MPU run: the clean run with the same seed and the same settings apart from
  the arm's own keys (arm, κ, m, server.*). One clean run serves every κ and m of a sweep.
- **Relative degradation** against that clean run, signed so that worse is positive:
  lower is better: (row − clean)/|clean|; higher is better: (clean − row)/|clean|; closer to 0 is better
  (privleak): (|row| − |clean|)/|clean|. ``deg_avg`` is the mean over forget_Q_A_Prob, forget_Q_A_ROUGE and
  model_utility (the paper's average degradation), over what is present (``deg_avg_over`` says which); for
  MUSE runs over forget_verbmem_ROUGE, forget_knowmem_ROUGE and retain_knowmem_ROUGE.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from mpu_cli.evals import benchmarks
from mpu_cli.evals.metric_registry import ABS, HIGHER, LOWER
from mpu_cli.mpu.arms import ARMS, BASELINE, NOISY, is_arm_key, order
from mpu_cli.mpu.survival import RESULT_COLUMNS

SEED_KEYS = ("seed", "client.seed")
# Settings that do not change a run's numbers, or that another column identifies (model.target: target_hash).
NOT_SETTINGS = frozenset({
    "resume", "run_id", "overwrite", "device", "client.device", "prepare.cache_dir", "transport",
    "runner.parallel_copies", "save_model", "eval.batch_size", "model.target", "verbose",
})
SHORT_NAMES = {"model.name": "model", "data.name": "data", "data.split": "split", "algorithm.name": "algorithm"}
ORDER = ("model", "data", "split", "algorithm", "arm", "kappa", "m")
# results.csv columns that are not configuration (runs from before run.json carry their config there)
_NOT_CONFIG_PREFIXES = ("target_", "time_", "deg_", "retainmodel_")


def _value(v):
    """A comparable, printable cell: None for missing / NaN, JSON text for lists and dicts."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    if hasattr(v, "item"):  # numpy scalars from pandas
        v = v.item()
    return v


def settings(config: dict, results: dict, metric_names: set[str]) -> dict:
    """The run's settings (see the module docstring) plus its seeds and the target's hash."""
    out = {}
    for key, value in config.items():
        if key in NOT_SETTINGS or key in metric_names or key.startswith(_NOT_CONFIG_PREFIXES):
            continue
        if key in ("target_hash", "leaks_theta0", "non_finite", *RESULT_COLUMNS):
            continue
        out[SHORT_NAMES.get(key, key)] = _value(value)
    if out.get("arm") in ARMS:
        out = ARMS[out["arm"]].settings(out)
    if out.get("kappa") is not None:
        out["kappa"] = float(out["kappa"])
    if results.get("target_hash") is not None:
        out["target_hash"] = _value(results["target_hash"])
    return out


def grouping_keys(rows: list[dict]) -> list[str]:
    """Setting keys with two or more values among the given runs, in reading order. Null is a value (a run
    without retain_logs_path is not a run with one). A key a run does not have does not apply to it (another
    algorithm's parameter: the algorithm key tells those runs apart), nor does an arm key its arm blanked."""
    keys = sorted({k for r in rows for k in r} - set(SEED_KEYS))
    varying = [k for k in keys
               if len({json.dumps(r[k], default=str) for r in rows
                       if k in r and not (r[k] is None and is_arm_key(k))}) > 1]
    head = [k for k in ORDER if k in varying]
    tail = [k for k in varying if k not in head and k != "target_hash"]
    arm_tail = [k for k in tail if is_arm_key(k)]
    rest = [k for k in tail if k not in arm_tail]
    return head + arm_tail + rest + (["target_hash"] if "target_hash" in varying else [])


def seeded(row: dict) -> bool:
    return row.get("seed") is not None


def replicate(row: dict) -> tuple:
    return tuple(json.dumps(row.get(k), default=str) for k in SEED_KEYS)


def group_key(row: dict, keys: list[str]) -> tuple:
    return (seeded(row), *(json.dumps(row.get(k), default=str) for k in keys))


def base_key(row: dict, keys: list[str]) -> tuple:
    """The group key without the arm's own keys: what a run shares with its clean baseline."""
    return (seeded(row), *(json.dumps(row.get(k), default=str) for k in keys if not is_arm_key(k)))


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


def deg_average(degs: dict[str, float], names: tuple[str, ...]) -> tuple[float, str]:
    """deg_avg over the `names` present (the benchmark's, Benchmark.deg_avg), and the note saying which."""
    used = [m for m in names if m in degs and not math.isnan(degs[m])]
    if not used:
        return math.nan, ""
    note = ", ".join(used)
    absent = [m for m in names if m not in used]
    if absent:
        note += f" ({', '.join(absent)} not available)"
    return sum(degs[m] for m in used) / len(used), note


def mark_duplicates(df: pd.DataFrame) -> pd.Series:
    """duplicate_of per finished run ("" for the run that is used)."""
    out = pd.Series("", index=df.index, dtype=object)
    first: dict[tuple, str] = {}
    for i in sorted(df.index, key=lambda i: df.at[i, "run"]):
        row = df.loc[i]
        if row.get("arm") != BASELINE and row.get("seed") is None:
            continue  # unseeded noisy runs are independent draws, never duplicates
        ident = (row["_group"], row["_replicate"])
        if ident in first:
            out.at[i] = first[ident]
        else:
            first[ident] = row["run"]
    return out


def add_degradation(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """clean_run, deg_<metric>, deg_avg and deg_avg_over for every finished noised/MPU row (df: used runs)."""
    df = df.copy()
    directions = benchmarks.directions()
    scored = [m for m in directions if m in metrics]
    for m in scored:
        df[f"deg_{m}"] = math.nan
    df["deg_avg"], df["deg_avg_over"], df["clean_run"] = math.nan, "", ""
    used = df[df.duplicate_of == ""]
    # unseeded: the clean run is deterministic (no secrets): it pairs with every unseeded draw of its client.seed
    cleans = {(r._base, r._replicate): i for i, r in used[used.arm == BASELINE].iterrows()}
    for i, row in used[used.arm.isin(NOISY)].iterrows():
        j = cleans.get((row._base, row._replicate))
        if j is None:
            df.at[i, "clean_run"] = "(no clean run)"
            continue
        degs = {m: relative_degradation(row[m], df.at[j, m], directions[m]) for m in scored}
        for m, d in degs.items():
            df.at[i, f"deg_{m}"] = d
        df.at[i, "deg_avg"], df.at[i, "deg_avg_over"] = deg_average(degs, benchmarks.of_row(row).deg_avg)
        df.at[i, "clean_run"] = df.at[j, "run"]
    return df


def sort_key(s: pd.Series) -> pd.Series:
    """Table order: arms clean → noised → mpu, numbers by value, the rest as text."""
    if s.name == "arm":
        return s.map(order)
    numeric = pd.to_numeric(s, errors="coerce")
    if numeric.notna().sum() == s.notna().sum():
        return numeric
    return s.astype(str)
