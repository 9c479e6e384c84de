"""How the views write numbers, durations and tables."""

from __future__ import annotations


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
