"""The stage a run is in, for the one line an interrupted run prints ("interrupted at round 1, copy 2/2")."""
from __future__ import annotations

_current = "start"


def set_stage(name: str) -> None:
    global _current
    _current = name


def current() -> str:
    return _current
