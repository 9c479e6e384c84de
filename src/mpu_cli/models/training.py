"""Plain supervised fine-tuning, used by the prepare stage to build base, target and retain models."""
from __future__ import annotations

import random
from collections.abc import Callable

import torch

from mpu_cli.data.formatting import collate_right
from mpu_cli.logprobs import mean_nll
from mpu_cli.progress import tqdm


def batches(examples: list[dict], batch_size: int, rng: random.Random) -> list[list[dict]]:
    order = list(range(len(examples)))
    rng.shuffle(order)
    return [[examples[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def finetune(
    model,
    examples: list[dict],
    *,
    pad: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    desc: str,
    stop_when: Callable[[object], bool] | None = None,
    min_epochs: int = 1,
) -> int:
    """AdamW with a linear warm-up of 1 epoch; returns the number of epochs run.

    stop_when(model) is checked after every epoch past min_epochs: it lets the target be trained
    "until forget Prob >= 0.9" instead of for a guessed number of epochs.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    steps_per_epoch = max(1, -(-len(examples) // batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps_per_epoch))
    bar = tqdm(range(epochs), desc=desc, unit="epoch")
    for epoch in bar:
        model.train()
        total = 0.0
        for chunk in batches(examples, batch_size, rng):
            batch = collate_right(chunk, pad)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = mean_nll(logits, batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
        bar.set_postfix(loss=f"{total / steps_per_epoch:.3f}")
        model.eval()
        if stop_when is not None and epoch + 1 >= min_epochs and stop_when(model):
            return epoch + 1
    model.eval()
    return epochs
