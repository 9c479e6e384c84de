"""Model shape facts the server needs, and the parameter-name -> block mapping (the protected parameter groups)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# HF Llama/Qwen naming: "model.layers.{l}.<...>"; anything else (embeddings, final norm, lm_head) is no block.
_BLOCK_RE = re.compile(r"^(?:.*\.)?layers\.(\d+)\.")


def block_of(name: str) -> int | None:
    """Transformer block index of a parameter name, or None for tensors outside every block."""
    match = _BLOCK_RE.match(name)
    return int(match.group(1)) if match else None


def _rotary_fraction(config) -> float:
    # transformers >= 5 keeps rope settings in rope_parameters; older versions had a top-level attribute.
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0))


@dataclass(frozen=True)
class ModelLayout:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim={self.head_dim} must be even (RoPE planes pair i with i + head_dim/2)"
            )

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf_config(cls, config) -> ModelLayout:
        """Layout of a Llama / Qwen2 / SmolLM config object."""
        if _rotary_fraction(config) != 1.0:
            # The plane rotations only commute with RoPE when every head dim is rotary.
            raise NotImplementedError("partial rotary embeddings are not supported by the reparameterization")
        heads = config.num_attention_heads
        hidden = config.hidden_size
        return cls(
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or hidden // heads,
            hidden_size=hidden,
            intermediate_size=config.intermediate_size,
        )
