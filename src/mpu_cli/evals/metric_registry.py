"""What a metric is, declared once: its name, the inputs the evaluator computes for it, the metrics it is computed
from, which way is better, whether it is a headline metric and whether deg_avg averages it. Each benchmark
lists its metrics (evals.benchmark); the evaluators, the prepare stage and the reports read them from there.

Standard library only: the reports import this without torch."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LOWER, HIGHER, ABS = "lower", "higher", "abs"  # lower is better | higher is better | closer to 0 is better
DIRECTION_WORDS = {LOWER: "lower is better", HIGHER: "higher is better", ABS: "closer to 0 is better"}


@dataclass(frozen=True)
class Metric:
    name: str
    better: str | None  # LOWER | HIGHER | ABS; None: no better direction (a raw score such as an attack's AUC)
    kind: str = ""  # how the evaluator computes it: a key of its compute table (evals.tofu.COMPUTE), if it has one
    on: str | None = None  # the data set (key of the evaluation data) it is computed on
    needs: tuple[tuple[str, str], ...] = ()  # (data key, quantity) pairs the evaluator's model passes produce
    depends: tuple[str, ...] = ()  # metrics it is computed from (they are computed and reported too)
    headline: int | None = None  # its place among the benchmark's headline metrics; None: not a headline one
    deg_avg: bool = False  # one of the metrics deg_avg averages


def names(metrics: Iterable[Metric]) -> tuple[str, ...]:
    return tuple(m.name for m in metrics)


def resolve(metrics: tuple[Metric, ...], requested: Iterable[str] | str | None) -> list[str]:
    """The requested metrics plus the ones they are computed from, in the benchmark's report order (None: all).
    An unknown name raises ValueError naming the accepted ones."""
    order = names(metrics)
    if requested is None:
        return list(order)
    if isinstance(requested, str):
        requested = [requested]
    by_name = {m.name: m for m in metrics}
    want: set[str] = set()
    for name in requested:
        if name not in by_name:
            raise ValueError(f"unknown metric {name!r}; accepted: {', '.join(order)}")
        want.add(name)
        want.update(by_name[name].depends)
    return [m for m in order if m in want]


def needs(metrics: tuple[Metric, ...], wanted: Iterable[str]) -> dict[str, set[str]]:
    """Per data key, the quantities the model passes must produce for the wanted metrics."""
    by_name = {m.name: m for m in metrics}
    out: dict[str, set[str]] = {}
    for name in wanted:
        for key, what in by_name[name].needs:
            out.setdefault(key, set()).add(what)
    return out


def headline(metrics: Iterable[Metric]) -> tuple[str, ...]:
    """The headline metrics in their declared places."""
    return tuple(m.name for m in sorted((m for m in metrics if m.headline is not None), key=lambda m: m.headline))
