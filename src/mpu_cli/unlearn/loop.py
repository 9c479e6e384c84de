"""The client's training loop, written once: epochs of micro-batches over the forget set (paired with retain
items), gradient accumulation over `grad_accum` micro-batches, clipping, one AdamW step per group.

What differs between running it plainly and under accelerate is an `Engine`: the device, which items of a
micro-batch this process computes, how a loss goes backward and how gradients are clipped and synchronised
(`PlainEngine` here; `accel.AcceleratedEngine` for accelerate).
"""
from __future__ import annotations

import random
from contextlib import nullcontext

import torch

from mpu_cli.data.formatting import collate_right
from mpu_cli.devices import batch_to
from mpu_cli.faults import scoped_kill_point
from mpu_cli.finite import check_loss
from mpu_cli.progress import tqdm
from mpu_cli.unlearn.batches import epoch_batches


class PlainEngine:
    """One process, the model's own device, plain autograd."""

    is_main = True

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.params = [p for p in model.parameters() if p.requires_grad]

    def share(self, pairs: list, n_group: int) -> tuple[list, float]:
        """(the items this process computes, their loss weight): a micro-batch weighs by its size, so the step
        equals one pass over the whole group."""
        return pairs, len(pairs) / n_group

    def accumulating(self, last: bool):
        return nullcontext()

    def backward(self, loss) -> None:
        loss.backward()

    def clip(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, max_norm)


def new_optimizer(module, cfg) -> torch.optim.Optimizer:
    """AdamW at a constant learning rate over the trainable parameters; a fresh one per copy (= per round)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_epochs(model, algorithm, data, cfg, pad: int, ref, desc: str, opt, engine) -> None:
    """cfg.epochs epochs of unlearning steps on `model` (already in train mode and placed by the engine)."""
    forget, retain, idk = data.forget, data.retain, data.idk
    needs_idk = getattr(algorithm, "needs_idk", False)
    rng = random.Random(cfg.seed)
    for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False, disable=not engine.is_main):
        micro = epoch_batches(len(forget), len(retain), cfg.batch_size, rng)
        for g in range(0, len(micro), cfg.grad_accum):
            group = micro[g : g + cfg.grad_accum]
            n_group = sum(len(b) for b in group)
            opt.zero_grad(set_to_none=True)
            for i, pairs in enumerate(group):
                mine, weight = engine.share(pairs, n_group)
                f = collate_right([forget[j] for j, _ in mine], pad)
                if needs_idk:
                    f["idk"] = collate_right([idk[j] for j, _ in mine], pad)
                r = collate_right([retain[k] for _, k in mine], pad) if algorithm.uses_retain else None
                f, r = batch_to(f, engine.device), batch_to(r, engine.device)
                with engine.accumulating(last=i == len(group) - 1):
                    loss = algorithm.loss(model, f, r, ref) * weight
                    check_loss(loss, desc)
                    engine.backward(loss)
            engine.clip(cfg.max_grad_norm)
            opt.step()
            scoped_kill_point("mid")  # fault-injection tests only (MPU_KILL_AT=round<r>_copy<k>_mid)
