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


# The linear projections of a Llama / Qwen2 / Mistral block (models/family.py): peft matches each name as the
# last part of a module's path, so these put an adapter on every projection of every block.
BLOCK_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    """client.lora: unlearn each copy through a fresh LoRA adapter (peft) and upload only the adapter."""

    enabled: bool = option(False, "true: each copy is unlearned through a fresh LoRA adapter and only the adapter "
                           "goes back to the server (peft's adapter_model.safetensors + adapter_config.json)")
    rank: int = option(8, "r: the adapter's rank", ge=1)
    alpha: float = option(16.0, "lora_alpha: the update B·A is scaled by alpha / rank", gt=0)
    dropout: float = option(0.0, "lora_dropout on the adapter's input", ge=0, lt=1)
    lr_scale: float = option(10.0, "the adapter trains at client.lr times this (a rank-r adapter moves less per "
                             "step than the whole weights at the same rate)", gt=0)
    target_modules: list[str] = option(help="the block projections that get an adapter (peft's target_modules: "
                                       "a module name's last part)", factory=lambda: list(BLOCK_PROJECTIONS))

    def __post_init__(self):
        self.target_modules = [str(m) for m in self.target_modules]


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
    lora: LoraSettings = option(help="LoRA clients", factory=LoraSettings)

    def __post_init__(self):
        if isinstance(self.lora, dict):  # read back from CLIENT.json or a resolved config
            self.lora = LoraSettings(**self.lora)


def check_lora(cfg: ClientConfig) -> None:
    """What client.lora does not combine with; ValueError naming the setting."""
    if not cfg.lora.target_modules:
        raise ValueError("client.lora.target_modules=[] names no module; accepted: block projections, e.g. "
                         f"{list(BLOCK_PROJECTIONS)}")
    if cfg.reference == ReferencePolicy.server_clean:
        raise ValueError("client.reference=server_clean with client.lora.enabled=true: a LoRA client's reference is "
                         "its copy with the adapter disabled; accepted: client_copy")
    for key, value, off in (("accelerate_config", cfg.accelerate_config, None),
                            ("mixed_precision", cfg.mixed_precision, None),
                            ("gradient_checkpointing", cfg.gradient_checkpointing, False)):
        if value != off:
            raise ValueError(f"client.{key}={value} with client.lora.enabled=true: LoRA clients run the plain loop; "
                             f"accepted: client.{key}={'null' if off is None else 'false'}")
