"""The registry of benchmarks a run can evaluate on: TOFU (QA pairs about fictitious authors) and MUSE (raw text:
news articles or books). `data.benchmark` picks one; whatever differs between them lives in its Benchmark
(evals.benchmark). Everything else asks here: which benchmark a config, a results row or a run folder belongs
to, and the union of their metrics for the reports.

Light on purpose: the reports import this without torch."""
from __future__ import annotations

from pathlib import Path

from mpu_cli.evals.benchmark import Benchmark
from mpu_cli.evals.muse_benchmark import MUSE
from mpu_cli.evals.tofu_benchmark import TOFU

BENCHMARKS: dict[str, Benchmark] = {}
DEFAULT = TOFU.name  # the benchmark of a config or a results row that names none (runs from before the key)
COLUMN = "data.benchmark"  # the results row's column (dotted config key) that names the benchmark


def register(bench: Benchmark) -> Benchmark:
    """Add a benchmark; its metrics' better directions must agree with those of the same names elsewhere."""
    for other in BENCHMARKS.values():
        clash = [m for m, d in bench.directions.items() if other.directions.get(m, d) != d]
        if clash:
            raise ValueError(f"benchmark {bench.name!r}: metric {clash[0]!r} is better in another direction "
                             f"than in {other.name!r}")
    BENCHMARKS[bench.name] = bench
    return bench


def unregister(name: str) -> None:
    BENCHMARKS.pop(name, None)


register(TOFU)
register(MUSE)


def named(name) -> Benchmark:
    """The benchmark called `name` (the default when None or empty); ValueError naming the accepted ones."""
    name = name or DEFAULT
    if name not in BENCHMARKS:
        raise ValueError(f"data.benchmark={name!r} is not one of {list(BENCHMARKS)}")
    return BENCHMARKS[name]


def of(data_cfg) -> Benchmark:
    """The benchmark of a data config (`data.benchmark`; TOFU when absent)."""
    return named(data_cfg.get("benchmark"))


def of_row(row) -> Benchmark:
    """The benchmark of a results row (a dict or a pandas row), by its data.benchmark column."""
    value = row.get(COLUMN)
    return named(value if isinstance(value, str) else None)


def of_rows(df) -> Benchmark:
    """The benchmark of a table of results rows: the one they all name (the default when they name none or
    several)."""
    names = {v for v in df[COLUMN] if isinstance(v, str) and v} if COLUMN in df else set()
    return named(names.pop() if len(names) == 1 else None)


def of_folder(folder) -> Benchmark | None:
    """The benchmark whose summary file a run or evaluation folder holds; None when it holds none."""
    return next((b for b in BENCHMARKS.values() if (Path(folder) / b.summary_file).is_file()), None)


def eval_files() -> tuple[str, ...]:
    return tuple(f for b in BENCHMARKS.values() for f in (b.eval_file, b.summary_file))


def retain_splits() -> tuple[str, ...]:
    """Every benchmark's data.retain_split values (a retain corpus chosen on its own)."""
    return tuple(dict.fromkeys(s for b in BENCHMARKS.values() for s in b.retain_splits))


def headline() -> tuple[str, ...]:
    """Every benchmark's headline metrics, benchmark by benchmark in their declared order."""
    return tuple(dict.fromkeys(m for b in BENCHMARKS.values() for m in b.headline))


def directions() -> dict[str, str]:
    """metric -> better direction, over every benchmark (register keeps them consistent)."""
    out: dict[str, str] = {}
    for b in BENCHMARKS.values():
        out |= {m: d for m, d in b.directions.items() if m not in out}
    return out


def metric_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for b in BENCHMARKS.values() for m in b.metric_names))
