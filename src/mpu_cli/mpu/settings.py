"""The server's settings, one type: mpu-run's `server.*` keys (the schema's `server` node) together with its
top-level arm, κ, m and seed are a `ServerConfig`; the MPUServer runs on one, the file transport hands one to
`mpu-server` as SERVER.json, and mpu-server's options are its fields.

No heavy imports (the command-line checks compose configurations with this schema before torch is needed).
"""
from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path

from mpu_cli.files import atomic_write_json
from mpu_cli.options import check_settings, enum_of, option

from .arms import ArmName, NoisedAlpha, arm_of


class NoiseReference(StrEnum):
    base = "base"  # σ from θ − θ_base
    raw = "raw"  # σ from θ itself (also used without a base)


class PublishDtype(StrEnum):
    model = "model"  # each tensor in the model's own dtype (bf16 rounds away noise below its spacing)
    float32 = "float32"  # every copy in fp32


class AlphaSchedule(StrEnum):
    linear = "linear"  # α_k = 1 + (k−1)/(m−1), the reference code's
    pow2 = "pow2"  # α_k = 2^(k−1)
    random = "random"  # α_1 = 1, the others 1 + U(0, 1): secret


NOISE_REFERENCES = tuple(NoiseReference)
PUBLISH_DTYPES = tuple(PublishDtype)
ALPHA_SCHEDULES = tuple(AlphaSchedule)


def _opt(default, meaning: str, secret: bool = False, **bounds):
    """A setting: its default, its meaning (mpu-run's --help, mpu-server's options) and a number's accepted range
    (`bounds`: ge, gt, le, lt). secret: never an option on a command line (other users of the machine can read
    one)."""
    return option(default, meaning, secret=secret, **bounds)


@dataclass
class ServerOptions:
    """mpu-run's `server.*` keys (field order = the order of results.csv's columns)."""

    alpha_schedule: AlphaSchedule = _opt(AlphaSchedule.linear, "the copies' scale factors α_k: "
                                         f"{' | '.join(AlphaSchedule)} (linear: 1+(k−1)/(m−1); random: secret)")
    eta: float = _opt(1.0, "the server's step η: θ_r = θ_{r−1} + η·(aggregate − θ_{r−1})", gt=0)
    publish_dtype: PublishDtype = _opt(PublishDtype.model, "the copies' dtype: model (model.dtype; bf16 rounds away "
                                       "noise below its spacing) | float32 (whatever model.dtype; the client then "
                                       "trains in fp32)")
    perturb_unprotected: bool = _opt(False, "also perturb embeddings, LM head, final norm (else published exactly)")
    noise_reference: NoiseReference = _opt(NoiseReference.base, "σ from θ − θ_base (base) or from θ itself (raw; "
                                           "also used without a base)")
    noised_alpha: NoisedAlpha = _opt(NoisedAlpha.one, "arm=noised: the copy's noise α·σ, α = one (1) | mean | max of "
                                     "the α_k that m MPU copies would carry under alpha_schedule (like-for-like with "
                                     "MPU)")
    common_noise: float = _opt(0.0, "arm=mpu: add noise common to all m copies, std common_noise·σ_l per block; "
                               "the aggregate keeps it (0: off)", ge=0)


@dataclass
class ServerConfig(ServerOptions):
    """Everything the server is told: the `server.*` options plus the run's arm, κ, m and seed."""

    arm: ArmName = _opt(ArmName.mpu, f"{' | '.join(ArmName)}: θ itself; one noisy copy; m reparameterized noisy "
                        "copies")
    kappa: float = _opt(0.01, "noise level κ: σ_l = κ·RMS(θ_l − θ_base,l) per transformer block", ge=0)
    m: int = _opt(2, "number of perturbed copies (arm=mpu needs m ≥ 2)", ge=1)
    seed: int | None = _opt(None, "null: secrets from a CSPRNG; an int makes the run reproducible (recorded)",
                            secret=True, ge=0)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Each setting as its field declares it (type, choice, range: options.check_settings), then the arm's own
        rules on m (mpu/arms.py). Raises a ValueError (ConfigError) with one line."""
        check_settings(self, type(self))
        arm_of(self.arm).check(self.m, self.noised_alpha)
        if self.common_noise and not arm_of(self.arm).zero_sum:
            raise ValueError(f"common_noise={self.common_noise!r} is not valid; accepted: 0 with arm={self.arm} "
                             "(only an arm with zero-sum copies shares a common noise part)")

    @classmethod
    def from_config(cls, cfg) -> ServerConfig:
        """From mpu-run's resolved configuration: its `server` node and its top-level arm, κ, m and seed."""
        top = {f.name for f in fields(cls)} - {f.name for f in fields(ServerOptions)}
        values = {f.name: cfg.server[f.name] for f in fields(ServerOptions)} | {k: cfg[k] for k in top}
        return cls(**{f.name: _typed(f, values[f.name]) for f in fields(cls)})

    def write(self, path: Path) -> None:
        """SERVER.json: what `mpu-server init --config` reads."""
        atomic_write_json(Path(path), asdict(self))

    @classmethod
    def read(cls, path: Path | None, overrides: dict | None = None) -> ServerConfig:
        """SERVER.json (None: the defaults), then `overrides` (None values: not given). ValueError: one line."""
        values = {}
        if path is not None:
            try:
                values = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: not a readable SERVER.json ({' '.join(str(e).split())})") from None
            known = [f.name for f in fields(cls)]
            unknown = sorted(set(values) - set(known)) if isinstance(values, dict) else ["(not a JSON object)"]
            if unknown:
                raise ValueError(f"{path}: unknown keys {unknown}; accepted: {known}")
        return cls(**values | {k: v for k, v in (overrides or {}).items() if v is not None})


def option_types() -> dict[str, type]:
    """The plain type of each setting (int for `int | None`; str for a choice, which `ServerConfig` turns into its
    Enum or refuses in one line), for a command line's parser."""
    hints = typing.get_type_hints(ServerConfig)
    out = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = str if enum_of(hint) else args[0] if args else hint
    return out


def _typed(f, value):
    """A config value as its field's type (Hydra hands back ints for floats written as `1`)."""
    kind = option_types()[f.name]
    return value if value is None or kind is str else kind(value)
