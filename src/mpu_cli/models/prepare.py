"""Build (or reuse) the three models a run needs: public base, target, retain.

`model.base` is a path/Hub name or "embedded" (the tiny Llama pretrained on the public corpus: shipped in
the package, or built here when the pretraining settings differ from the shipped one's);
`model.target` / `model.retain` are a path/Hub name, "finetune" (base fine-tuned on TOFU's `full` / on the
retain split; for MUSE on the forget + retain documents / on the retain documents only, the retrained
model), or null (no retain model). Built models are cached (mpu_cli.cache) under a content hash of everything
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
from mpu_cli.data.formatting import ChatFormat, collate_right, encode_qa, pad_id
from mpu_cli.data.muse import is_muse
from mpu_cli.data.tofu import load_public_text, load_split, split_names
from mpu_cli.digest import code_digest, value_digest
from mpu_cli.logprobs import sequence_nll
from mpu_cli.models.identity import model_identity
from mpu_cli.models.io import load_model, load_tokenizer, local_model_path, resolve_dtype, save_model
from mpu_cli.models.tiny import EMBEDDED_TOKENIZER, SHIPPED_BASE, init_tiny_llama, load_embedded_tokenizer
from mpu_cli.models.training import finetune

log = logging.getLogger(__name__)

# Bump when the way prepared models are built changes: old cache entries then stop matching. Cache keys also
# hold the package version and a digest of the source that builds the models (`_code_version`).
PREPARE_VERSION = "3"  # 3: a given model is keyed by the content of its weights, config and tokenizer
TARGET_CHECK_SPLIT = "forget10"
SHIPPED_RECIPE = "recipe.json"
PREPARE_MODULES = ("mpu_cli.models.prepare", "mpu_cli.models.training", "mpu_cli.models.tiny",
                   "mpu_cli.data.formatting", "mpu_cli.logprobs")


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


def encode_rows(tokenizer, rows: list[dict], fmt: ChatFormat) -> list[dict]:
    return [encode_qa(tokenizer, r["question"], r["answer"], fmt) for r in rows]


@torch.inference_mode()
def mean_prob(model, examples: list[dict], pad: int, batch_size: int = 32) -> float:
    """Mean over items of exp(-avg answer-token loss): the forget_Q_A_Prob definition."""
    probs = []
    for s in range(0, len(examples), batch_size):
        batch = collate_right(examples[s : s + batch_size], pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, n = sequence_nll(logits, batch["labels"])
        probs += torch.exp(-nll / n.clamp(min=1)).tolist()
    return sum(probs) / len(probs)


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
    muse = is_muse(data_cfg)
    if model_cfg.base == "embedded":
        # The embedded base is pretrained on the embedded TOFU world's public text, whatever the benchmark.
        public = SimpleNamespace(source="embedded") if muse else data_cfg
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

    def finetuned(kind: str, config: str, epochs: int | None) -> str:
        """epochs=None: train until forget Prob >= target_min_prob (the target); else a fixed count."""
        if base is None:
            raise ValueError(f"model.{kind}=finetune needs model.base")
        rows = load_split(data_cfg.source, config)
        key = base_key | {"kind": kind, "rows": value_digest(rows), "max_epochs": prep_cfg.target_max_epochs,
                          "min_prob": prep_cfg.target_min_prob, "lr": prep_cfg.lr, "bs": prep_cfg.batch_size,
                          "seed": prep_cfg.seed, "fmt": fmt.__dict__, "epochs": epochs}
        return _cached(cache, kind, key, lambda out: _build_finetuned(
            base, tokenizer, rows, data_cfg, prep_cfg, fmt, dtype, out, epochs, kind))

    if muse:
        return _prepare_muse(model_cfg, data_cfg, prep_cfg, cache, base, base_key, tokenizer, fmt, dtype, tok_path)
    return _target_and_retain(model_cfg, prep_cfg, finetuned, "full", split_names(data_cfg.split)["retain"], base,
                              tok_path)


def _target_and_retain(model_cfg, prep_cfg, finetuned, target_data, retain_data, base, tok_path) -> Prepared:
    """The given or fine-tuned target and retain models; `finetuned(kind, data, epochs)` builds one."""
    target = finetuned("target", target_data, None) if model_cfg.target == "finetune" else model_cfg.target
    if model_cfg.retain == "finetune":
        # The retain model gets the target's training budget, so the two differ only in the forget data.
        epochs = prep_cfg.retain_epochs or content_cache.built_info(target).get("epochs") or prep_cfg.target_max_epochs
        retain = finetuned("retain", retain_data, epochs)
    else:
        retain = model_cfg.retain
    return Prepared(base=str(base) if base else None, target=str(target), retain=retain and str(retain),
                    tokenizer=str(target) if model_cfg.target == "finetune" else tok_path)


def _prepare_muse(model_cfg, data_cfg, prep_cfg, cache: Path, base, base_key: dict, tokenizer, fmt, dtype,
                  tok_path) -> Prepared:
    """MUSE: the target is the base fine-tuned on the forget and retain documents until its forget chunks reach
    mean Prob >= prepare.target_min_prob (at most target_max_epochs); the retrained model gets the same number
    of epochs on the retain documents only."""
    from mpu_cli.data.muse import training_corpora
    from mpu_cli.data.text import corpus_chunks

    corpora = training_corpora(data_cfg.source, data_cfg.split)
    forget = corpora["forget"]

    def finetuned(kind: str, docs: list[str], epochs: int | None) -> str:
        if base is None:
            raise ValueError(f"model.{kind}=finetune needs model.base")
        key = base_key | {"kind": f"muse-{kind}", "docs": value_digest(docs), "check": value_digest(forget),
                          "max_epochs": prep_cfg.target_max_epochs, "min_prob": prep_cfg.target_min_prob,
                          "lr": prep_cfg.lr, "bs": prep_cfg.batch_size, "seed": prep_cfg.seed,
                          "max_length": fmt.max_length, "epochs": epochs}
        return _cached(cache, kind, key, lambda out: _finetune_examples(
            base, tokenizer, corpus_chunks(tokenizer, docs, fmt.max_length),
            corpus_chunks(tokenizer, forget, fmt.max_length), prep_cfg, dtype, out, epochs, kind))

    return _target_and_retain(model_cfg, prep_cfg, finetuned, corpora["target"], corpora["retain"], base, tok_path)


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


def _build_finetuned(base, tokenizer, rows, data_cfg, prep_cfg, fmt, dtype, out: Path, epochs: int | None,
                     kind: str) -> dict:
    examples = encode_rows(tokenizer, rows, fmt)
    # The stop criterion uses the largest forget split, so one target serves forget01/05/10 alike.
    forget = encode_rows(tokenizer, load_split(data_cfg.source, TARGET_CHECK_SPLIT), fmt)
    return _finetune_examples(base, tokenizer, examples, forget, prep_cfg, dtype, out, epochs, kind)


def _finetune_examples(base, tokenizer, examples: list[dict], forget: list[dict], prep_cfg, dtype, out: Path,
                       epochs: int | None, kind: str) -> dict:
    """The base fine-tuned on `examples`: epochs=None until mean Prob of `forget` >= target_min_prob."""
    model = load_model(str(base), dtype=torch.float32)  # fine-tune in fp32 on CPU; cast on save
    pad = pad_id(tokenizer)
    reached = {}

    def forget_prob_reached(m) -> bool:
        reached["prob"] = mean_prob(m, forget, pad)
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
        reached["prob"] = mean_prob(model, forget, pad)
    model.to(dtype)
    save_model(model, tokenizer, out)
    return {"epochs": epochs, "forget_prob": reached["prob"]}
