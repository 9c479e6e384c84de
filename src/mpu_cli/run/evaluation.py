"""Evaluation as a run does it: the TOFU data of a split, the evaluator's settings from the config, the
retain reference, and a cache for the models that are fixed across a sweep (target, retain)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import ConfigError
from mpu_cli.data.tofu import load_split, split_names
from mpu_cli.evals.tofu import QUICK_METRICS, EvalConfig, evaluate, load_retain_reference, write_eval
from mpu_cli.files import atomic_write_text
from mpu_cli.models.io import load_model

EVAL_VERSION = "2"  # bump when metric code changes: cached evaluations then stop matching
# Cached evaluations are also keyed by the package version and a digest of the evaluation code.
EVAL_MODULES = ("mpu_cli.evals.tofu", "mpu_cli.evals.metrics", "mpu_cli.evals.batched", "mpu_cli.data.formatting",
                "mpu_cli.logprobs")


def eval_data(source: str, split: str) -> dict[str, list[dict]]:
    names = split_names(split)
    return {
        "forget": load_split(source, names["forget_perturbed"]),
        "retain": load_split(source, names["retain_perturbed"]),
        "real_authors": load_split(source, names["real_authors"]),
        "world_facts": load_split(source, names["world_facts"]),
        "holdout": load_split(source, names["holdout"]),
    }


def eval_config(cfg) -> EvalConfig:
    metrics = QUICK_METRICS if cfg.eval.metrics == "quick" else None
    return EvalConfig(batch_size=cfg.eval.batch_size, max_new_tokens=cfg.eval.max_new_tokens, metrics=metrics)


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
    marker, cached = cache / "COMPLETE", cache / "TOFU_EVAL.json"
    if marker.is_file() and cached.is_file():  # never without its marker, never altered since
        text = cached.read_bytes()
        if marker.read_text().strip() == hashlib.sha256(text).hexdigest():
            return json.loads(text)
    model = load_model(model_path, dtype).to(device or "cpu")
    result = evaluate(model, tokenizer, data, fmt, eval_config(cfg), retain_reference=retain_ref, label=label)
    write_eval(cache, result)
    atomic_write_text(marker, _file_sha(cache / "TOFU_EVAL.json") + "\n")  # marker last: the file's hash
    return result


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def retain_reference_from_logs(path: str) -> dict:
    """The forget_quality / privleak reference from a retain model's TOFU_EVAL.json (ours or open-unlearning's)."""
    try:
        return load_retain_reference(path)
    except ValueError as e:
        raise ConfigError(f"retain_logs_path={path!r}: {e}") from None
