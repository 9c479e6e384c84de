"""The client loop: run one unlearning algorithm on one published copy.

The client gets a model skeleton (public architecture), the published weights of one copy, its own
forget/retain data and (only under reference=server_clean) a reference state handed over by the runner.
It returns the updated weights. Nothing here can reach the server's seeds, scalings or exact weights.
"""
from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from mpu_cli.data.formatting import ChatFormat, encode_qa, encode_rows
from mpu_cli.data.tofu import load_idk, load_split, split_names
from mpu_cli.devices import pick_device
from mpu_cli.finite import check_state
from mpu_cli.models.io import load_state_into, state_dict_fp32
from mpu_cli.unlearn.loop import PlainEngine, new_optimizer, train_epochs
from mpu_cli.unlearn.settings import REFERENCE_POLICIES, ClientConfig, ReferencePolicy, check_lora  # noqa: F401 (the client's settings)


@dataclass
class ClientData:
    """The client's own private data, already tokenized. `idk[i]` (algorithms with needs_idk) is forget
    item i's question with a refusal answer."""

    forget: list[dict]
    retain: list[dict]
    idk: list[dict] | None = None


def encode_text_client_data(tokenizer, max_length: int, source: str, split: str, retain_split: str,
                            algorithm) -> ClientData:
    """MUSE: the forget corpus and (for algorithms with a retain term) the retain corpus, cut into chunks of
    max_length tokens whose every token is a label."""
    from mpu_cli.data.muse import load_muse, texts
    from mpu_cli.data.text import corpus_chunks

    if getattr(algorithm, "needs_idk", False):
        raise ValueError(f"algorithm={algorithm.name!r} answers questions with refusals; MUSE's forget set is raw "
                         "text without questions (accepted there: every algorithm but idkdpo)")
    forget = corpus_chunks(tokenizer, texts(load_muse(source, "raw", split)), max_length)
    retain = (corpus_chunks(tokenizer, texts(load_muse(source, "raw", retain_split)), max_length)
              if algorithm.uses_retain else [])
    return ClientData(forget, retain)


def encode_client_data(tokenizer, fmt: ChatFormat, source: str, split: str, algorithm, seed: int = 0) -> ClientData:
    names = split_names(split)
    forget_rows = load_split(source, names["forget"])
    forget = encode_rows(tokenizer, forget_rows, fmt)
    retain = encode_rows(tokenizer, load_split(source, names["retain"]), fmt) if algorithm.uses_retain else []
    idk = None
    if getattr(algorithm, "needs_idk", False):
        refusals, rng = load_idk(source), random.Random(seed)
        idk = [encode_qa(tokenizer, r["question"], rng.choice(refusals), fmt) for r in forget_rows]
    return ClientData(forget, retain, idk)


def _frozen(model):
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def unlearn_copy(
    model,
    published: dict[str, torch.Tensor],
    algorithm,
    data: ClientData,
    cfg: ClientConfig,
    pad: int,
    reference_state: dict[str, torch.Tensor] | None = None,
    desc: str = "client",
) -> dict[str, torch.Tensor]:
    """The loop of unlearn/loop.py (AdamW at a constant LR, gradient accumulation, clipping; a fresh optimizer
    per call, i.e. per copy and round), plainly or under accelerate.
    Returns the updated weights as fp32 CPU tensors, wherever it trained; under client.lora the trained
    adapter instead (unlearn/adapter.Adapter: its factors under peft's names, CPU tensors, and its config)."""
    from mpu_cli.unlearn import accel

    if cfg.lora.enabled:
        check_lora(cfg)
    if not accel.wanted(cfg):  # under accelerate, accelerate places the model
        model.to(pick_device(cfg.device, "client.device"))
    load_state_into(model, published)
    retain = data.retain
    ref = None
    if algorithm.needs_reference and not cfg.lora.enabled:
        ref = _frozen(model)  # client_copy: a snapshot of the copy as received
        if cfg.reference == ReferencePolicy.server_clean:
            load_state_into(ref, reference_state)
    if algorithm.uses_retain and not retain:
        raise ValueError(f"algorithm={algorithm.name!r} needs a retain set")
    if getattr(algorithm, "needs_idk", False) and not data.idk:
        raise ValueError(f"algorithm={algorithm.name!r} needs refusal answers (ClientData.idk)")
    trainable = getattr(algorithm, "trainable_parameters", lambda _m: None)(model)
    if cfg.lora.enabled:
        return _unlearn_adapter(model, algorithm, data, cfg, pad, trainable, desc)
    with only_trainable(model, trainable), accel.gradient_checkpointing(model, cfg.gradient_checkpointing):
        if accel.wanted(cfg):  # under accelerate: device placement, mixed precision, sharding; full state back
            updated = accel.train_accelerated(model, algorithm, data, cfg, pad, ref, desc)
        else:
            _train(model, algorithm, data, cfg, pad, ref, desc)
            model.eval()
            updated = state_dict_fp32(model)
    check_state(updated, desc, "the updated weight")
    return updated


@contextmanager
def only_trainable(model, names: list[str] | None):
    """requires_grad only on `names` (None: leave every parameter as it is); restored on exit, since the
    client's model object is reused across copies and rounds."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    if names is not None:
        keep = set(names)
        unknown = keep - set(saved)
        if unknown:
            raise ValueError(f"trainable parameters not in the model: {sorted(unknown)[:3]}")
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])


def _train(model, algorithm, data: ClientData, cfg: ClientConfig, pad: int, ref, desc: str) -> None:
    opt = new_optimizer(model, cfg)
    model.train()
    train_epochs(model, algorithm, data, cfg, pad, ref, desc, opt, PlainEngine(model))


def _unlearn_adapter(model, algorithm, data: ClientData, cfg: ClientConfig, pad: int, trainable, desc: str):
    """The plain loop on a fresh adapter over the copy; the reference is the copy with the adapter disabled."""
    from mpu_cli.unlearn.adapter import Adapter, AdapterDisabled, lora_adapter

    with lora_adapter(model, cfg.lora, cfg.seed, trainable) as peft_model:
        ref = AdapterDisabled(peft_model) if algorithm.needs_reference else None
        _train(peft_model, algorithm, data, replace(cfg, lr=cfg.lr * cfg.lora.lr_scale), pad, ref, desc)
        peft_model.eval()
        adapter = Adapter(peft_model)
    check_state(adapter, desc, "the adapter's factor")
    return adapter
