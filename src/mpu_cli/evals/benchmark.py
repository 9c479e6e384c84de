"""What a benchmark is: everything that differs between benchmarks, behind one interface. A benchmark names its
files, its metrics (evals.metric_registry), its evaluator, its splits, and says how its data are read for the
evaluation, the client and the prepare stage. evals.benchmarks holds the registry.

Light on purpose: the reports read the names and the metrics without torch; the evaluator and the data encoders
are imported on first use."""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from mpu_cli.evals import metric_registry as MR


@dataclass
class TrainingSet:
    """One model the prepare stage fine-tunes: what identifies it in the cache key, and how to build its data."""

    key: dict  # the benchmark's part of the prepared model's cache key
    digests: dict  # more of it, entered as a digest of each value (the data themselves)
    examples: Callable[[], list[dict]]  # the encoded training examples
    check: Callable[[], list[dict]]  # the encoded forget examples whose mean Prob stops the target's training


class Benchmark(ABC):
    name: str  # data.benchmark's value
    evaluator_class: str  # "module:Class" of its evaluator (an evals.evaluator.Evaluator)
    reference_metric: str  # the retain model's evaluation is a reference only when it has this metric
    metrics: tuple[MR.Metric, ...]  # in report order
    quick_metrics: tuple[str, ...]  # eval.metrics=quick
    forget_splits: tuple[str, ...]  # accepted data.split values
    retain_splits: tuple[str, ...] = ()  # accepted data.retain_split values (empty: the key must stay null)
    no_retain_split: str = "null"  # what data.retain_split accepts when retain_splits is empty
    extra_eval_modules: tuple[str, ...] = ()  # modules besides its own and its evaluator's that its evaluation runs
    source_layout: str = ""  # the layout a local data folder follows (named in the error on a bad data.source)
    deg_avg_note: str = ""  # how the reports describe the metrics deg_avg averages
    # (forgetting, utility) axes of the reports' forget-vs-utility plot: the first pair with values is drawn
    forget_utility_axes: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"<benchmark {self.name}>"

    @property
    def eval_file(self) -> str:
        """e.g. TOFU_EVAL.json: {metric: {agg_value, value_by_index}}."""
        return f"{self.name.upper()}_EVAL.json"

    @property
    def summary_file(self) -> str:
        """e.g. TOFU_SUMMARY.json: {metric: agg_value}."""
        return f"{self.name.upper()}_SUMMARY.json"

    # ---- metrics ------------------------------------------------------------------------------------------

    @cached_property
    def metric_names(self) -> tuple[str, ...]:
        return MR.names(self.metrics)

    @cached_property
    def headline(self) -> tuple[str, ...]:
        return MR.headline(self.metrics)

    @property
    def forget_metric(self) -> str:
        """The first headline metric: how much of the forget set the model still knows (runs print it)."""
        return self.headline[0]

    @cached_property
    def deg_avg(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics if m.deg_avg)

    @cached_property
    def directions(self) -> dict[str, str]:
        return {m.name: m.better for m in self.metrics if m.better is not None}

    # ---- evaluation ---------------------------------------------------------------------------------------

    @cached_property
    def evaluator(self):
        module, _, cls = self.evaluator_class.partition(":")
        return getattr(importlib.import_module(module), cls)(self)

    @property
    def eval_modules(self) -> tuple[str, ...]:
        """The modules whose code determines its evaluations (a change invalidates cached ones)."""
        return (type(self).__module__, self.evaluator_class.partition(":")[0], *self.extra_eval_modules)

    def evaluate(self, model, tokenizer, data, fmt, cfg, retain_reference=None, label: str = "model") -> dict:
        return self.evaluator.evaluate(model, tokenizer, data, fmt, cfg, retain_reference=retain_reference,
                                       label=label)

    def write_eval(self, out_dir, result: dict) -> None:
        self.evaluator.write_eval(out_dir, result)

    def summarize(self, result: dict) -> dict:
        return self.evaluator.summarize(result)

    def load_retain_reference(self, path_or_eval) -> dict:
        return self.evaluator.load_retain_reference(path_or_eval)

    def reference_from(self, retain_eval: dict):
        """The reference in a retain model's evaluation, or None when it lacks the metric (quick evaluation)."""
        return self.load_retain_reference(retain_eval) if self.reference_metric in retain_eval else None

    def eval_settings(self, batch_size: int, max_new_tokens: int, quick: bool, data_cfg=None):
        return self.evaluator.EvalConfig(batch_size=batch_size, max_new_tokens=max_new_tokens,
                                         metrics=self.quick_metrics if quick else None)

    @abstractmethod
    def load_eval_data(self, source: str, split: str) -> dict[str, list[dict]]:
        """Every row the evaluation of `split` reads."""

    # ---- configuration and inputs -------------------------------------------------------------------------

    def split_problem(self, data_cfg) -> tuple[str, tuple[str, ...]] | None:
        """(the one-line problem, the accepted values) of data.split / data.retain_split, or None when valid."""
        if data_cfg.split not in self.forget_splits:
            message = f"data.split={data_cfg.split!r} is not one of {list(self.forget_splits)} (data.benchmark={self.name})"
            return message, self.forget_splits
        retain = data_cfg.get("retain_split")
        if retain is not None and retain not in self.retain_splits:
            accepted = list(self.retain_splits) if self.retain_splits else self.no_retain_split
            return f"data.retain_split={retain!r} is not accepted; accepted: {accepted}", ()
        return None

    @abstractmethod
    def check_data(self, data_cfg) -> None:
        """Load (and so validate) every data set a run reads, before anything is written."""

    # ---- the client and the prepare stage -----------------------------------------------------------------

    @abstractmethod
    def client_data(self, tokenizer, fmt, data_cfg, algorithm):
        """The client's encoded data (unlearn.client.ClientData)."""

    def public_source(self, data_cfg) -> str:
        """The data source whose public text the embedded base model is pretrained on."""
        return "embedded"

    @abstractmethod
    def training_set(self, data_cfg, kind: str, tokenizer, fmt) -> TrainingSet:
        """The data the prepare stage fine-tunes the `kind` model on ("target": everything the target learnt;
        "retain": all but the forget set)."""
