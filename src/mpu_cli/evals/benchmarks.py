"""The two benchmarks a run can evaluate on, behind one interface: TOFU (QA pairs about fictitious authors) and
MUSE (raw text: news articles or books). `data.benchmark` picks one; everything that differs between them —
the data an evaluation reads, the metrics, the file names, the retain reference — is looked up here.

The evaluator modules (evals.tofu, evals.muse) load torch, so they are imported on first use: the reports
read only the file names."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    eval_file: str  # e.g. TOFU_EVAL.json: {metric: {agg_value, value_by_index}}
    summary_file: str  # e.g. TOFU_SUMMARY.json: {metric: agg_value}
    module: str  # the evaluator: evaluate, write_eval, summarize, load_retain_reference, EvalConfig, QUICK_METRICS
    reference_metric: str  # the retain model's evaluation is a reference only when it has this metric

    @property
    def evaluator(self):
        return importlib.import_module(self.module)

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
        ev = self.evaluator
        extra = {"chat_template": bool(data_cfg.get("knowmem_chat_template"))} if self.name == "muse" and data_cfg else {}
        return ev.EvalConfig(batch_size=batch_size, max_new_tokens=max_new_tokens,
                             metrics=ev.QUICK_METRICS if quick else None, **extra)

    def load_eval_data(self, source: str, split: str) -> dict[str, list[dict]]:
        """Every row the evaluation of `split` reads."""
        if self.name == "muse":
            from mpu_cli.data.muse import eval_sets

            return eval_sets(source, split)
        from mpu_cli.data.tofu import load_split, split_names

        names = split_names(split)
        return {
            "forget": load_split(source, names["forget_perturbed"]),
            "retain": load_split(source, names["retain_perturbed"]),
            "real_authors": load_split(source, names["real_authors"]),
            "world_facts": load_split(source, names["world_facts"]),
            "holdout": load_split(source, names["holdout"]),
        }


BENCHMARKS: dict[str, Benchmark] = {
    "tofu": Benchmark("tofu", "TOFU_EVAL.json", "TOFU_SUMMARY.json", "mpu_cli.evals.tofu", "forget_truth_ratio"),
    "muse": Benchmark("muse", "MUSE_EVAL.json", "MUSE_SUMMARY.json", "mpu_cli.evals.muse", "mia_min_k"),
}
EVAL_FILES = tuple(b.eval_file for b in BENCHMARKS.values())
SUMMARY_FILES = tuple(b.summary_file for b in BENCHMARKS.values())


def of(data_cfg) -> Benchmark:
    """The benchmark of a data config (`data.benchmark`; TOFU when absent)."""
    name = data_cfg.get("benchmark") or "tofu"
    if name not in BENCHMARKS:
        raise ValueError(f"data.benchmark={name!r} is not one of {list(BENCHMARKS)}")
    return BENCHMARKS[name]
