"""Build (or reuse) the three models a run needs: public base, target, retain.

`model.base` is a path/Hub name or "embedded" (the tiny Llama pretrained on the public corpus: shipped in
the package, or built here when the pretraining settings differ from the shipped one's);
`model.target` / `model.retain` are a path/Hub name, "finetune" (base fine-tuned on the benchmark's training
sets, Benchmark.training_set: TOFU's `full` / its retain split; MUSE's forget + retain documents / its retain
documents only, the retrained model), or null (no retain model). Built models are cached (mpu_cli.cache) under a content hash of everything
that determines them, so equal inputs reuse the cache and any change rebuilds. A given model is identified by
its content (models/identity.py); a GGUF file is converted into the same cache.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from mpu_cli import cache as content_cache
from mpu_cli.data.formatting import ChatFormat, encode_rows, pad_id
from mpu_cli.data.tofu import load_public_text, load_split
from mpu_cli.digest import code_digest, value_digest
from mpu_cli.evals import benchmarks
from mpu_cli.evals.tofu import forget_prob
from mpu_cli.models.identity import model_identity
from mpu_cli.models.io import load_model, load_tokenizer, local_model_path, resolve_dtype, save_model
from mpu_cli.models.tiny import EMBEDDED_TOKENIZER, SHIPPED_BASE, init_tiny_llama, load_embedded_tokenizer
from mpu_cli.models.training import finetune

log = logging.getLogger(__name__)

# Bump when the way prepared models are built changes: old cache entries then stop matching. Cache keys also
# hold the package version and a digest of the source that builds the models (`_code_version`).
PREPARE_VERSION = "3"  # 3: a given model is keyed by the content of its weights, config and tokenizer
SHIPPED_RECIPE = "recipe.json"
# (the benchmarks' training sets and the evaluator's forget Prob, the target's stop criterion, included)
PREPARE_MODULES = ("mpu_cli.models.prepare", "mpu_cli.models.training", "mpu_cli.models.tiny",
                   "mpu_cli.data.formatting", "mpu_cli.logprobs", "mpu_cli.evals.tofu_benchmark",
                   "mpu_cli.evals.muse_benchmark", "mpu_cli.evals.tofu", "mpu_cli.evals.batched",
                   "mpu_cli.evals.metrics")


def _code_version() -> str:
    return code_digest(*PREPARE_MODULES)


@dataclass
class Prepared:
    base: str | None
    target: str
    retain: str | None
    tokenizer: str


def _given(value, key: str, cache: Path):
    """A model reference of the config as a loadable path (a GGUF file: its converted folder in `cache`);
    "embedded", "finetune" and null stand for themselves."""
    if not value or value in ("embedded", "finetune"):
        return value
    return local_model_path(str(value), key, cache)


def encode_text(tokenizer, text: str, max_length: int) -> dict:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids + [tokenizer.eos_token_id]
    ids = ids[:max_length]
    return {"input_ids": ids, "labels": list(ids)}


def prepare_models(model_cfg, data_cfg, prep_cfg) -> Prepared:
    cache = Path(os.path.expanduser(prep_cfg.cache_dir))
    base_name = model_cfg.base  # as configured: a GGUF base's converted folder is identified by its content below
    given = {key: _given(model_cfg.get(key), f"model.{key}", cache) for key in ("base", "target", "retain", "tokenizer")}
    model_cfg = SimpleNamespace(**(dict(model_cfg) | given))
    fmt = ChatFormat(model_cfg.system_prompt, model_cfg.date_string, model_cfg.max_length)
    dtype = resolve_dtype(model_cfg.dtype)
    tok_path = model_cfg.tokenizer or (str(EMBEDDED_TOKENIZER) if model_cfg.base == "embedded" else model_cfg.base)
    tokenizer = load_embedded_tokenizer() if model_cfg.base == "embedded" else load_tokenizer(tok_path)

    base_key = {"v": PREPARE_VERSION, "code": _code_version(), "base": base_name, "dtype": model_cfg.dtype}
    if model_cfg.tokenizer:
        base_key["tok"] = model_identity(tok_path).digest
    bench = benchmarks.of(data_cfg)
    if model_cfg.base == "embedded":
        # The embedded base is pretrained on the embedded TOFU world's public text, whatever the benchmark.
        public = SimpleNamespace(source=bench.public_source(data_cfg))
        recipe = embedded_base_recipe(public, prep_cfg, fmt)
        shipped = shipped_base(recipe)
        if shipped is not None:
            base_key |= {"shipped": recipe, "weights": model_identity(shipped).digest}
            base = str(shipped)
            log.info("prepare: using the shipped embedded base model %s", shipped)
        else:  # another pretraining recipe than the shipped one (e.g. prepare.base_epochs=…): built and cached
            base_key |= recipe
            base = _cached(cache, "base", base_key,
                           lambda out: build_embedded_base(tokenizer, public, prep_cfg, fmt, out))
    elif model_cfg.base:
        base_key["src"] = model_identity(model_cfg.base).digest
        base = model_cfg.base
    else:
        base = None

    def finetuned(kind: str, epochs: int | None) -> str:
        """The base fine-tuned on the benchmark's `kind` set (Benchmark.training_set): epochs=None until its
        forget Prob >= target_min_prob (the target); else a fixed count."""
        if base is None:
            raise ValueError(f"model.{kind}=finetune needs model.base")
        data = bench.training_set(data_cfg, kind, tokenizer, fmt)
        key = base_key | data.key | {k: value_digest(v) for k, v in data.digests.items()}
        key |= {"max_epochs": prep_cfg.target_max_epochs, "min_prob": prep_cfg.target_min_prob, "lr": prep_cfg.lr,
                "bs": prep_cfg.batch_size, "seed": prep_cfg.seed, "epochs": epochs}
        return _cached(cache, kind, key, lambda out: _finetune_examples(
            base, tokenizer, data.examples(), data.check(), prep_cfg, dtype, out, epochs, kind))

    return _target_and_retain(model_cfg, prep_cfg, finetuned, base, tok_path)


def _target_and_retain(model_cfg, prep_cfg, finetuned, base, tok_path) -> Prepared:
    """The given or fine-tuned target and retain models; `finetuned(kind, epochs)` builds one."""
    target = finetuned("target", None) if model_cfg.target == "finetune" else model_cfg.target
    if model_cfg.retain == "finetune":
        # The retain model gets the target's training budget, so the two differ only in the forget data.
        epochs = prep_cfg.retain_epochs or content_cache.built_info(target).get("epochs") or prep_cfg.target_max_epochs
        retain = finetuned("retain", epochs)
    else:
        retain = model_cfg.retain
    return Prepared(base=str(base) if base else None, target=str(target), retain=retain and str(retain),
                    tokenizer=str(target) if model_cfg.target == "finetune" else tok_path)


def _public_rows(source: str) -> list[dict]:
    return load_split(source, "real_authors") + load_split(source, "world_facts")


def _cached(cache: Path, kind: str, key: dict, build) -> str:
    """The cache entry of `key`, built once (see mpu_cli.cache)."""
    return str(content_cache.entry(cache, kind, key, build, f"{kind} model"))


def embedded_base_recipe(data_cfg, prep_cfg, fmt: ChatFormat) -> dict:
    """Everything the embedded base's pretraining depends on: tokenizer, corpus, schedule, chat format."""
    return {"tok": model_identity(EMBEDDED_TOKENIZER).digest, "public": value_digest(load_public_text(data_cfg.source)),
            "qa": value_digest(_public_rows(data_cfg.source)), "epochs": prep_cfg.base_epochs,
            "lr": prep_cfg.lr, "bs": prep_cfg.batch_size, "seed": prep_cfg.seed, "fmt": fmt.__dict__}


def shipped_base(recipe: dict) -> Path | None:
    """The base model shipped in the package (pretrained by scripts/make_embedded_base.py, so no run spends
    a minute and a half pretraining it) when it was made by `recipe` and its weights are intact; else None."""
    try:
        made = json.loads((SHIPPED_BASE / SHIPPED_RECIPE).read_text())
    except (OSError, ValueError):
        return None
    if made.get("recipe") != json.loads(json.dumps(recipe)):
        return None
    problem = content_cache.damaged(SHIPPED_BASE, SHIPPED_RECIPE)
    if problem is not None:
        log.warning("prepare: the shipped embedded base model %s is damaged (%s): building one instead; "
                    "reinstalling the package restores it", SHIPPED_BASE, problem)
        return None
    return SHIPPED_BASE


def write_shipped_base(recipe: dict, folder: Path) -> None:
    """Record the recipe and the content hash of each file of a base built into `folder` (what `shipped_base`
    checks)."""
    content_cache.mark(folder, SHIPPED_RECIPE, {"recipe": recipe})


def build_embedded_base(tokenizer, data_cfg, prep_cfg, fmt: ChatFormat, out: Path) -> dict:
    model = init_tiny_llama(tokenizer, prep_cfg.seed)
    examples = [encode_text(tokenizer, t, fmt.max_length) for t in load_public_text(data_cfg.source)]
    examples += encode_rows(tokenizer, _public_rows(data_cfg.source), fmt)
    epochs = finetune(model, examples, pad=pad_id(tokenizer), epochs=prep_cfg.base_epochs, lr=prep_cfg.lr,
                      batch_size=prep_cfg.batch_size, seed=prep_cfg.seed, desc="prepare base")
    save_model(model, tokenizer, out)
    return {"epochs": epochs, "params": sum(p.numel() for p in model.parameters())}


def _finetune_examples(base, tokenizer, examples: list[dict], forget: list[dict], prep_cfg, dtype, out: Path,
                       epochs: int | None, kind: str) -> dict:
    """The base fine-tuned on `examples`: epochs=None until mean Prob of `forget` >= target_min_prob."""
    model = load_model(str(base), dtype=torch.float32)  # fine-tune in fp32 on CPU; cast on save
    pad = pad_id(tokenizer)
    reached = {}

    def forget_prob_reached(m) -> bool:
        reached["prob"] = forget_prob(m, forget, pad)
        return reached["prob"] >= prep_cfg.target_min_prob

    if epochs is None:
        epochs = finetune(model, examples, pad=pad, epochs=prep_cfg.target_max_epochs, lr=prep_cfg.lr,
                          batch_size=prep_cfg.batch_size, seed=prep_cfg.seed, desc=f"prepare {kind}",
                          stop_when=forget_prob_reached)
        if reached.get("prob", 0.0) < prep_cfg.target_min_prob:
            log.warning("prepare: target reached forget Prob %.3f < %.2f after %d epochs",
                        reached.get("prob", math.nan), prep_cfg.target_min_prob, epochs)
    else:
        epochs = finetune(model, examples, pad=pad, epochs=epochs, lr=prep_cfg.lr,
                          batch_size=prep_cfg.batch_size, seed=prep_cfg.seed, desc=f"prepare {kind}")
        reached["prob"] = forget_prob(model, forget, pad)
    model.to(dtype)
    save_model(model, tokenizer, out)
    return {"epochs": epochs, "forget_prob": reached["prob"]}
