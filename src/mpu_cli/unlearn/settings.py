"""The client's settings, one type for the config schema (`client.*`), the client loop and CLIENT.json.

No heavy imports: the command-line checks compose configurations with this schema before torch is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mpu_cli.options import option


class ReferencePolicy(StrEnum):
    """Where the frozen reference model of NPO-style losses comes from."""

    client_copy = "client_copy"  # the copy the client received
    server_clean = "server_clean"  # the exact θ_0 (the paper's code): a leak, flagged in the results


class MixedPrecision(StrEnum):
    no = "no"
    bf16 = "bf16"
    fp16 = "fp16"


REFERENCE_POLICIES = tuple(ReferencePolicy)
MIXED_PRECISION = tuple(MixedPrecision)


@dataclass
class ClientConfig:
    lr: float = option(1e-5, "the client's learning rate (AdamW) (default: the model's preset for the algorithm, "
                       "conf/model/<model>.yaml)", gt=0)
    weight_decay: float = option(0.01, "AdamW's weight decay", ge=0)
    epochs: int = option(10, "E: local epochs per round (default: the model's preset for the algorithm)", ge=1)
    batch_size: int = option(8, "micro-batch; effective batch = batch_size * grad_accum", ge=1)
    grad_accum: int = option(4, "micro-batches per optimizer step", ge=1)
    max_grad_norm: float = option(1.0, "gradients are clipped to this norm", gt=0)
    seed: int = option(0, "the data order of round r is seeded with seed + r", ge=0)
    reference: ReferencePolicy = option(
        ReferencePolicy.client_copy, "the frozen reference model: client_copy (the copy received) | server_clean "
        "(the paper's code: the exact θ_0, a leak, flagged in the results)")
    # Large models (unlearn/accel.py): with neither accelerate_config nor mixed_precision the plain loop runs.
    accelerate_config: str | None = option(
        None, "an accelerate config: accelerate_configs/<name>.yaml or a file path (null: none)")
    mixed_precision: MixedPrecision | None = option(
        None, "no | bf16 | fp16 (null: the accelerate config's, else none)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    device: str = option("auto", "the client loop's device: auto (cuda when available) | cpu | cuda | cuda:N "
                         "(default: `device`)")
