"""The client's settings, one type for the config schema (`client.*`), the client loop and CLIENT.json.

No heavy imports: the command-line checks compose configurations with this schema before torch is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

REFERENCE_POLICIES = ("client_copy", "server_clean")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class ClientConfig:
    lr: float = 1e-5
    weight_decay: float = 0.01
    epochs: int = 10
    batch_size: int = 8  # micro-batch; effective batch = batch_size * grad_accum
    grad_accum: int = 4
    max_grad_norm: float = 1.0
    seed: int = 0  # the data order of round r is seeded with seed + r
    # client_copy: the frozen reference model is the copy the client received; server_clean: the exact θ_0
    # (the paper's code; it leaks θ_0 to the client and is flagged in the results)
    reference: str = "client_copy"
    # Large models (unlearn/accel.py): an accelerate config (accelerate_configs/<name>.yaml or a file path),
    # mixed precision ("no" | "bf16" | "fp16"; None: the accelerate config's, else none) and activation
    # recomputation. With neither accelerate_config nor mixed_precision the plain client loop runs.
    accelerate_config: str | None = None
    mixed_precision: str | None = None
    gradient_checkpointing: bool = False
    device: str = "auto"  # the plain loop's device: auto (cuda when available) | cpu | cuda | cuda:N


_TYPES = {"float": ((int, float), "a number"), "int": ((int,), "an integer"), "bool": ((bool,), "true or false")}


def check_types(cfg: ClientConfig) -> None:
    """ValueError naming the first field whose value is not of its declared kind (CLIENT.json is read without
    the config schema that checks `client.*` in mpu-run)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.type in _TYPES:
            types, words = _TYPES[f.type]
            if not isinstance(value, types) or (isinstance(value, bool) and f.type != "bool"):
                raise ValueError(f"client.{f.name}={value!r} is not {words}; accepted: {words}")
