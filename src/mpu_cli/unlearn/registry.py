"""Name -> algorithm class. A new algorithm is one module that decorates its class with @register."""
from __future__ import annotations

ALGORITHMS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        ALGORITHMS[name] = cls
        return cls

    return deco


def build_algorithm(name: str, params: dict):
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm={name!r} is not one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name](**params)
