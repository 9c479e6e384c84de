"""Evaluation as a run does it: the benchmark's data of a split, the evaluator's settings from the config, the
retain reference, and a cache for the models that are fixed across a sweep (target, retain)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import ConfigError
from mpu_cli.evals import benchmarks
from mpu_cli.files import atomic_write_text
from mpu_cli.models.io import load_model

EVAL_VERSION = "2"  # bump when metric code changes: cached evaluations then stop matching
# Cached evaluations are also keyed by the package version and a digest of the evaluation code.
EVAL_MODULES = ("mpu_cli.evals.tofu", "mpu_cli.evals.metrics", "mpu_cli.evals.batched", "mpu_cli.data.formatting",
                "mpu_cli.logprobs", "mpu_cli.evals.muse", "mpu_cli.data.text")


def eval_data(data_cfg) -> dict[str, list[dict]]:
    """Every row the evaluation of the run's benchmark and split reads."""
    return benchmarks.of(data_cfg).load_eval_data(data_cfg.source, data_cfg.split)


def eval_config(cfg):
    return benchmarks.of(cfg.data).eval_settings(cfg.eval.batch_size, cfg.eval.max_new_tokens,
                                                  quick=cfg.eval.metrics == "quick", data_cfg=cfg.data)


def model_digest(path: str) -> str:
    """The identity of a model: a content hash of its safetensors files (a Hub name stands for itself)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*.safetensors")) if p.is_dir() else ([p] if p.is_file() else [])
    if not files:
        return path  # a Hub name: identified by name
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_evaluation(cfg, model_path: str, tokenizer, fmt, dtype, device, data: dict,
                      retain_ref: dict | None, label: str = "model", digest: str | None = None) -> dict:
    """Evaluate a model that is fixed for a sweep (target, retain) once; keyed by content, never by folder.
    `digest`: the model's model_digest when the caller has it already (hashing a large model takes seconds)."""
    from mpu_cli.cachekey import code_digest

    key = json.dumps({"v": EVAL_VERSION, "code": code_digest(*EVAL_MODULES), "model": digest or model_digest(model_path),
                      "data": hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(),
                      "eval": OmegaConf.to_container(cfg.eval, resolve=True), "fmt": fmt.__dict__, "ref": retain_ref},
                     sort_keys=True, default=str)
    cache = Path(cfg.prepare.cache_dir).expanduser() / "evals" / hashlib.sha256(key.encode()).hexdigest()[:16]
    bench = benchmarks.of(cfg.data)
    marker, cached = cache / "COMPLETE", cache / bench.eval_file
    if marker.is_file() and cached.is_file():  # never without its marker, never altered since
        text = cached.read_bytes()
        if marker.read_text().strip() == hashlib.sha256(text).hexdigest():
            return json.loads(text)
    model = load_model(model_path, dtype).to(device or "cpu")
    result = bench.evaluate(model, tokenizer, data, fmt, eval_config(cfg), retain_reference=retain_ref, label=label)
    bench.write_eval(cache, result)
    atomic_write_text(marker, _file_sha(cached) + "\n")  # marker last: the file's hash
    return result


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def retain_reference_from_logs(path: str, data_cfg) -> dict:
    """The retain model's reference (TOFU: forget_quality and privleak; MUSE: privleak) from its TOFU_EVAL.json /
    MUSE_EVAL.json (ours or open-unlearning's)."""
    try:
        return benchmarks.of(data_cfg).load_retain_reference(path)
    except ValueError as e:
        raise ConfigError(f"retain_logs_path={path!r}: {e}") from None
