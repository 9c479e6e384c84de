"""LoRA adapters as both parties see them: peft's config built from `client.lora`, the content of peft's
adapter_config.json, the scale of the update, and which weight of the model each factor pair (A [r, in],
B [out, r]) updates. The client trains and uploads an adapter (unlearn/adapter.py); the server maps its factors
back and merges them (mpu/lora_aggregate.py).

Light imports: peft is imported only where its config object is built.
"""
from __future__ import annotations

from collections.abc import Iterable

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"  # peft's own file names
_PREFIX = "base_model.model."  # peft's prefix of the wrapped model's parameter names
_FACTORS = {".lora_A.weight": "A", ".lora_B.weight": "B"}
_FLOAT_FACTOR_DTYPES = ("F32", "BF16", "F16")


def peft_config(settings, target_modules: list[str] | None = None):
    """peft's LoraConfig of `client.lora`; target_modules: full module names that replace the setting's (RMU:
    the adapter goes where the method trains)."""
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                      target_modules=list(target_modules or settings.target_modules))


def config_json(config) -> dict:
    """adapter_config.json's content, as peft's save_pretrained writes it (sets as sorted lists)."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}


def scaling(adapter_config: dict) -> float:
    """lora_alpha / r: what peft multiplies B·A by. ValueError for an adapter whose update is not s·B·A with one
    s per adapter (rsLoRA, DoRA, rank or alpha patterns, trained biases)."""
    r, alpha = adapter_config.get("r"), adapter_config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"adapter_config.json: r={r!r} is not a positive integer")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise ValueError(f"adapter_config.json: lora_alpha={alpha!r} is not a positive number")
    unsupported = {"use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}, "bias": "none"}
    for key, plain in unsupported.items():
        if adapter_config.get(key, plain) not in (plain, None):
            raise ValueError(f"adapter_config.json: {key}={adapter_config[key]!r}; accepted: {plain!r} (a plain "
                             "LoRA update s·B·A)")
    return float(alpha) / r


def factor_keys(weight: str) -> tuple[str, str]:
    """peft's keys of the A and B factors of the model weight `weight` (e.g. model.layers.0.mlp.up_proj.weight)."""
    module = weight.removesuffix(".weight")
    return tuple(f"{_PREFIX}{module}{suffix}" for suffix in _FACTORS)


def factor_pairs(keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """model weight -> (A key, B key) of an adapter's tensor names; ValueError for a name that is not a LoRA
    factor or a factor without its partner."""
    found: dict[str, dict[str, str]] = {}
    for key in keys:
        suffix = next((s for s in _FACTORS if key.startswith(_PREFIX) and key.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"adapter tensor {key!r} is not a LoRA factor ({_PREFIX}<module>.lora_A|lora_B.weight)")
        weight = key[len(_PREFIX):-len(suffix)] + ".weight"
        found.setdefault(weight, {})[_FACTORS[suffix]] = key
    lone = [w for w, f in found.items() if len(f) != 2]
    if lone:
        raise ValueError(f"adapter: {lone[0]!r} has only one of its two factors")
    return {w: (f["A"], f["B"]) for w, f in found.items()}


def expected_factors(keys: Iterable[str], shapes: dict[str, tuple[int, ...]], rank: int) -> dict:
    """name -> (shape, accepted dtype codes) of every factor an adapter of rank `rank` over the weights named by
    `keys` must hold (the exchange reader's `expected`); ValueError for a factor of no 2-D weight of the model."""
    out = {}
    for weight, (a, b) in factor_pairs(keys).items():
        shape = shapes.get(weight)
        if shape is None or len(shape) != 2:
            raise ValueError(f"adapter: {weight!r} is not a matrix of the model")
        out[a] = ((rank, shape[1]), _FLOAT_FACTOR_DTYPES)
        out[b] = ((shape[0], rank), _FLOAT_FACTOR_DTYPES)
    return out
