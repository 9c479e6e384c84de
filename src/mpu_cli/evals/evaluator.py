"""What every benchmark's evaluator shares: resolving the requested metrics against the benchmark's registry, the
summary ({metric: agg_value}), writing the EVAL and SUMMARY files, reading an evaluation back."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from mpu_cli.evals import metric_registry as MR
from mpu_cli.files import atomic_write_json


class Evaluator(ABC):
    """One benchmark's evaluator. Subclasses define EvalConfig, `evaluate` and `load_retain_reference`."""

    EvalConfig: type

    def __init__(self, benchmark):
        self.benchmark = benchmark

    def resolve_metrics(self, requested: Iterable[str] | str | None) -> list[str]:
        """The requested metrics plus the ones they are computed from, in report order (None: every metric)."""
        return MR.resolve(self.benchmark.metrics, requested)

    @abstractmethod
    def evaluate(self, model, tokenizer, data: dict[str, list[dict]], fmt=None, cfg=None, retain_reference=None,
                 progress: bool = True, label: str = "model") -> dict:
        """{metric: {"agg_value", "value_by_index", ...}} of `model` on the benchmark's evaluation data."""

    @abstractmethod
    def load_retain_reference(self, path_or_eval) -> dict:
        """The retain model's reference for the metrics that compare with it, from read_eval's sources."""

    @staticmethod
    def summarize(result: dict) -> dict:
        """The SUMMARY file's content: {metric: agg_value}."""
        return {m: v["agg_value"] for m, v in result.items() if isinstance(v, dict) and "agg_value" in v}

    def write_eval(self, out_dir, result: dict) -> None:
        """Write the benchmark's EVAL and SUMMARY files into out_dir, each atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / self.benchmark.eval_file, result)
        atomic_write_json(out / self.benchmark.summary_file, self.summarize(result))

    def read_eval(self, path_or_eval) -> tuple[dict, str]:
        """(an evaluation, where it came from) from an EVAL file, a folder holding one, or an in-memory dict."""
        if isinstance(path_or_eval, dict):
            return path_or_eval, "the given evaluation"
        name = self.benchmark.eval_file
        p = Path(path_or_eval)
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise FileNotFoundError(f"retain reference {str(p)!r} not found (expected a {name})")
        return json.loads(p.read_text(encoding="utf-8")), str(p)
