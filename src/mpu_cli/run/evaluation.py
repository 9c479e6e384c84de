"""Evaluation as a run does it: the benchmark's data of a split, the evaluator's settings from the config, the
retain reference, and a cache for the models that are fixed across a sweep (target, retain)."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import ConfigError, MetricSet
from mpu_cli.digest import code_digest, value_digest
from mpu_cli.evals import benchmarks
from mpu_cli.models.io import load_model

EVAL_VERSION = "2"  # bump when metric code changes: cached evaluations then stop matching
# Cached evaluations are also keyed by the package version and a digest of the evaluation code: these shared
# modules and the benchmark's own (Benchmark.eval_modules).
EVAL_MODULES = ("mpu_cli.evals.metrics", "mpu_cli.evals.batched", "mpu_cli.evals.evaluator",
                "mpu_cli.evals.metric_registry", "mpu_cli.data.formatting", "mpu_cli.logprobs")


def eval_data(data_cfg) -> dict[str, list[dict]]:
    """Every row the evaluation of the run's benchmark and split reads."""
    return benchmarks.of(data_cfg).load_eval_data(data_cfg.source, data_cfg.split)


def eval_config(cfg):
    return benchmarks.of(cfg.data).eval_settings(cfg.eval.batch_size, cfg.eval.max_new_tokens,
                                                  quick=cfg.eval.metrics == MetricSet.quick, data_cfg=cfg.data)


def cached_evaluation(cfg, model_path: str, tokenizer, fmt, dtype, device, data: dict,
                      retain_ref: dict | None, label: str, content: str) -> dict:
    """Evaluate a model that is fixed for a sweep (target, retain) once; keyed by content, never by folder.
    `content`: the digest of the model and the tokenizer it is evaluated with (run/identity.evaluated_digest)."""
    from mpu_cli import cache

    bench = benchmarks.of(cfg.data)
    key = {"v": EVAL_VERSION, "code": code_digest(*EVAL_MODULES, *bench.eval_modules), "model": content,
           "data": value_digest(data, 64), "eval": OmegaConf.to_container(cfg.eval, resolve=True),
           "fmt": fmt.__dict__, "ref": retain_ref}
    fresh = {}

    def evaluate(out: Path) -> None:
        model = load_model(model_path, dtype).to(device or "cpu")
        fresh["result"] = bench.evaluate(model, tokenizer, data, fmt, eval_config(cfg), retain_reference=retain_ref,
                                         label=label)
        bench.write_eval(out, fresh["result"])

    entry = cache.entry(Path(cfg.prepare.cache_dir).expanduser() / "evals", "eval", key, evaluate,
                        f"evaluation of the {label} model")
    return fresh["result"] if "result" in fresh else json.loads((entry / bench.eval_file).read_text(encoding="utf-8"))


def retain_reference_from_logs(path: str, data_cfg) -> dict:
    """The retain model's reference (TOFU: forget_quality and privleak; MUSE: privleak) from its TOFU_EVAL.json /
    MUSE_EVAL.json (ours or open-unlearning's)."""
    try:
        return benchmarks.of(data_cfg).load_retain_reference(path)
    except ValueError as e:
        raise ConfigError(f"retain_logs_path={path!r}: {e}") from None
