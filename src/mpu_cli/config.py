"""Structured configs (registered in Hydra's ConfigStore) and the checks run before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

ARMS = ("clean", "noised", "mpu")


class ConfigError(ValueError):
    """Bad user input: the CLI prints the one-line message and exits with code 2."""


@dataclass
class ModelConfig:
    name: str = "tiny"
    base: Optional[str] = "embedded"  # public base: "embedded" | Hub name | local path | .gguf file | null
    target: str = "finetune"  # "finetune" (base fine-tuned on `full`) | Hub name | local path
    retain: Optional[str] = "finetune"  # "finetune" | Hub name | local path | null
    tokenizer: Optional[str] = None
    dtype: str = "float32"  # training / publishing dtype; server arithmetic is fp32 regardless
    system_prompt: Optional[str] = "You are a helpful assistant."
    date_string: Optional[str] = None
    max_length: int = 128
    client_lr: float = 1e-5  # the model's own unlearning presets (spec/algorithms.md)
    client_epochs: int = 10


@dataclass
class DataConfig:
    name: str = "embedded"
    source: str = "embedded"  # "embedded" | Hub dataset name | local folder laid out like locuslab/TOFU
    split: str = "forget10"


@dataclass
class AlgorithmConfig:
    name: str = "npo"
    params: dict = field(default_factory=dict)


@dataclass
class ServerSettings:
    alpha_schedule: str = "linear"
    eta: float = 1.0
    perturb_unprotected: bool = False
    noise_reference: str = "base"


@dataclass
class ClientSettings:
    lr: float = 1e-5
    weight_decay: float = 0.01
    epochs: int = 10
    batch_size: int = 8
    grad_accum: int = 4
    max_grad_norm: float = 1.0
    seed: int = 0
    reference: str = "client_copy"


@dataclass
class EvalSettings:
    batch_size: int = 16
    max_new_tokens: int = 200
    metrics: str = "all"  # "all" | "quick" (forget/retain Prob and ROUGE)


@dataclass
class PrepareSettings:
    cache_dir: str = "~/.cache/mpu-cli"
    base_epochs: int = 20
    target_max_epochs: int = 80
    target_min_prob: float = 0.9
    retain_epochs: Optional[int] = None  # None: the target's epoch count
    lr: float = 3e-3
    batch_size: int = 16
    seed: int = 0


@dataclass
class MPUConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    arm: str = "mpu"
    kappa: float = 0.01
    m: int = 2
    rounds: int = 1
    seed: Optional[int] = None
    save_model: bool = False
    server: ServerSettings = field(default_factory=ServerSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="mpu_schema", node=MPUConfig)


def validate(cfg) -> None:
    """Checks that need no model or data: fail fast, before a run directory fills up."""
    from mpu_cli.unlearn import ALGORITHMS

    if cfg.arm not in ARMS:
        raise ConfigError(f"arm={cfg.arm!r} is not one of {list(ARMS)}")
    if cfg.algorithm.name not in ALGORITHMS:
        raise ConfigError(f"algorithm={cfg.algorithm.name!r} is not one of {sorted(ALGORITHMS)}")
    if cfg.kappa < 0:
        raise ConfigError(f"kappa={cfg.kappa} must be >= 0")
    if cfg.m < 1:
        raise ConfigError(f"m={cfg.m} must be >= 1")
    if cfg.arm == "mpu" and cfg.m < 2:
        raise ConfigError(f"m={cfg.m} with arm=mpu: MPU needs m >= 2 copies (use arm=noised for one)")
    if cfg.rounds < 1:
        raise ConfigError(f"rounds={cfg.rounds} must be >= 1")
    if cfg.client.reference not in ("client_copy", "server_clean"):
        raise ConfigError(f"client.reference={cfg.client.reference!r} is not one of ['client_copy', 'server_clean']")
    if cfg.server.alpha_schedule not in ("linear", "pow2"):
        raise ConfigError(f"server.alpha_schedule={cfg.server.alpha_schedule!r} is not one of ['linear', 'pow2']")
    if cfg.eval.metrics not in ("all", "quick"):
        raise ConfigError(f"eval.metrics={cfg.eval.metrics!r} is not one of ['all', 'quick']")
