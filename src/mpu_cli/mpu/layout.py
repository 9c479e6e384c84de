"""Model shape facts the server needs, and the model family whose adapter (models/family.py) says what each tensor is."""

from __future__ import annotations

from dataclasses import dataclass

from mpu_cli.models.family import Family, family_of


@dataclass(frozen=True)
class ModelLayout:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    model_type: str

    def __post_init__(self):
        family_of(self.model_type)  # a layout exists only for a supported family
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

    @property
    def family(self) -> Family:
        """The adapter: the role of every tensor of this model."""
        return family_of(self.model_type)

    @classmethod
    def from_hf_config(cls, config) -> ModelLayout:
        """Layout of a transformers config of a supported family (models/family.py); UnsupportedModel otherwise."""
        model_type = getattr(config, "model_type", None)
        return cls(**family_of(model_type).shape(config), model_type=model_type)
