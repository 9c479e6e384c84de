"""How the views write numbers, durations, tables and the machine a table was measured on."""

from __future__ import annotations

import os


def g(x, digits: int = 3) -> str:
    """A number to `digits` significant digits ("–" for a missing one)."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    return f"{x:.{digits}g}"


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def machine(threads: int | str | None = None) -> str:
    """Where a table was measured: the CPU model, its core count and the torch threads of the runs (numbers from
    another CPU differ: docs/results.md says by how much). threads: the runs' (default: $OMP_NUM_THREADS, else 1)."""
    from mpu_cli.devices import cpu_model

    threads = os.environ.get("OMP_NUM_THREADS", "1") if threads is None else threads
    return f"{cpu_model()} ({os.cpu_count()} cores, OMP_NUM_THREADS={threads})"
