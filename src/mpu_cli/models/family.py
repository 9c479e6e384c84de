"""Model families: what every tensor of a supported architecture is to the reparameterization T, and the
shape facts T needs. The one place that knows tensor names; layout, reparam, the audit's alignment and RMU ask it.

A tensor inside transformer block l has one role:
- rotate: its RoPE-plane rows (q/k/v weights and biases: the output side) or columns (o_proj: the input side)
  turn with S_j of its KV group;
- permute: its MLP hidden channels, rows of gate/up (and their biases), columns of down;
- keep: untouched by T, with the reason (norms scale the residual stream per channel, and T never acts on
  the residual stream; the output biases of o_proj / down_proj live in it too).
A block tensor with no declared role is an error: published untransformed it could break the function (a per-head
q_norm inside the rotated planes) or go out unprotected. Tensors outside every block (embeddings, final norm,
lm_head) are no block's: T does not act on them and they are published exactly (spec §6.4).

Light imports only (no torch): the input checks ask this module before any model is loaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

ROTATE, PERMUTE, KEEP = "rotate", "permute", "keep"
ROWS, COLUMNS = 0, 1  # the axis T acts on: rows = the output side (LoRA's B), columns = the input side (LoRA's A)
QUERY, KV = "query", "kv"  # rotated heads: every query head (S_j of its group) or one per KV head

# The output head: absent from a checkpoint whose head is tied to the input embedding (it is rebuilt from it).
TIED_HEAD = "lm_head.weight"
# "<prefix>layers.{l}." — HF Llama / Qwen2 / Mistral naming, any prefix (e.g. a wrapper's "base_model.model.")
_BLOCK_RE = re.compile(r"^(?:.*\.)?layers\.(\d+)\.")


class UnsupportedModel(ValueError):
    """A model family, or a tensor of a block, that no adapter declares."""


@dataclass(frozen=True)
class Role:
    op: str  # ROTATE | PERMUTE | KEEP
    axis: int | None = None  # ROWS | COLUMNS (None for KEEP)
    heads: str | None = None  # QUERY | KV, for ROTATE
    why: str = ""


ROTATE_QUERY_ROWS = Role(ROTATE, ROWS, QUERY, "query rows of head h: q_h ← S_jᵀ q_h (j = h's KV group)")
ROTATE_KV_ROWS = Role(ROTATE, ROWS, KV, "key / value rows of KV head j: ← S_jᵀ rows")
ROTATE_QUERY_COLUMNS = Role(ROTATE, COLUMNS, QUERY, "o_proj column block of head h ← block·S_j: undoes the value path")
PERMUTE_ROWS = Role(PERMUTE, ROWS, why="MLP hidden channels on the output side (gate / up rows)")
PERMUTE_COLUMNS = Role(PERMUTE, COLUMNS, why="MLP hidden channels on the input side (down columns)")
RESIDUAL_BIAS = Role(KEEP, why="bias of a projection into the residual stream, which T does not touch")
RESIDUAL_NORM = Role(KEEP, why="per-channel scale of the residual stream, which T does not touch")
ROPE_BUFFER = Role(KEEP, why="RoPE frequencies: a function of the position only, and the plane rotations commute "
                             "with RoPE")


@dataclass(frozen=True)
class Family:
    """One architecture's tensor roles. `projections`: module path inside a block -> role of its weight (its
    bias follows the output side: transformed with rows, kept when T acts on the columns); `kept`: other block
    tensors, by suffix."""

    model_types: tuple[str, ...]
    projections: MappingProxyType
    kept: MappingProxyType
    block_prefix: str  # the decoder blocks' parameter prefix, "model.layers"
    mlp_output: str  # the MLP's projection back into the residual stream (RMU trains its weight)

    def role(self, suffix: str) -> Role:
        """Role of the block tensor named `suffix` (the name after "layers.{l}."); UnsupportedModel if none."""
        if suffix in self.kept:
            return self.kept[suffix]
        module, _, kind = suffix.rpartition(".")
        role = self.projections.get(module)
        if role is None or kind not in ("weight", "bias"):
            raise UnsupportedModel(
                f"block tensor {suffix!r} has no declared role in the {'/'.join(self.model_types)} adapter "
                f"(models/family.py): published as is it could break the function or go out unprotected")
        return RESIDUAL_BIAS if kind == "bias" and role.axis == COLUMNS else role

    def members(self, op: str, heads: str | None = None, axis: int | None = None) -> list[str]:
        """Block suffixes with that transform, in declaration order: each projection's weight, then its bias."""
        out = []
        for module in self.projections:
            for kind in ("weight", "bias"):
                role = self.role(f"{module}.{kind}")
                if role.op == op and heads in (None, role.heads) and axis in (None, role.axis):
                    out.append(f"{module}.{kind}")
        return out

    def mlp_output_weight(self, layer: int) -> str:
        """Full parameter name of block `layer`'s MLP output weight."""
        return f"{self.block_prefix}.{layer}.{self.mlp_output}.weight"

    def check_names(self, names) -> None:
        """Every block tensor among `names` has a role (UnsupportedModel naming the first that has none)."""
        for name in names:
            split = split_block(name)
            if split is not None:
                self.role(split[1])

    def shape(self, config) -> dict:
        """Shape facts of a transformers config: layers, heads, KV heads, head_dim, hidden size, d_ff."""
        if _rotary_fraction(config) != 1.0:
            # The plane rotations only commute with RoPE when every head dim is rotary.
            raise UnsupportedModel("partial rotary embeddings are not supported by the reparameterization")
        heads, hidden = config.num_attention_heads, config.hidden_size
        return {
            "num_layers": config.num_hidden_layers,
            "num_heads": heads,
            "num_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
            "head_dim": getattr(config, "head_dim", None) or hidden // heads,
            "hidden_size": hidden,
            "intermediate_size": config.intermediate_size,
        }


def _rotary_fraction(config) -> float:
    # transformers >= 5 keeps rope settings in rope_parameters; older versions had a top-level attribute.
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0))


# Llama, Mistral and Qwen2 name and shape their blocks alike; Qwen2 adds q/k/v biases, Llama's attention_bias
# and mlp_bias add the others. Each is proven function-preserving at random init (tests/test_family.py).
DECODER = Family(
    model_types=("llama", "mistral", "qwen2"),
    projections=MappingProxyType({
        "self_attn.q_proj": ROTATE_QUERY_ROWS,
        "self_attn.k_proj": ROTATE_KV_ROWS,
        "self_attn.v_proj": ROTATE_KV_ROWS,
        "self_attn.o_proj": ROTATE_QUERY_COLUMNS,
        "mlp.gate_proj": PERMUTE_ROWS,
        "mlp.up_proj": PERMUTE_ROWS,
        "mlp.down_proj": PERMUTE_COLUMNS,
    }),
    kept=MappingProxyType({
        "input_layernorm.weight": RESIDUAL_NORM,
        "post_attention_layernorm.weight": RESIDUAL_NORM,
        "self_attn.rotary_emb.inv_freq": ROPE_BUFFER,
    }),
    block_prefix="model.layers",
    mlp_output="mlp.down_proj",
)

FAMILIES = (DECODER,)
SUPPORTED = tuple(sorted(t for f in FAMILIES for t in f.model_types))


def family_of(model_type: str | None) -> Family:
    """The adapter of a transformers `model_type`; UnsupportedModel (one line naming the supported ones) if none."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise UnsupportedModel(f"model_type={model_type!r} is not supported by the reparameterization; "
                           f"accepted: {', '.join(SUPPORTED)}")


def split_block(name: str) -> tuple[int, str] | None:
    """(block index, name inside the block) of a parameter name, or None for tensors outside every block."""
    match = _BLOCK_RE.match(name)
    return None if match is None else (int(match.group(1)), name[match.end():])


def block_of(name: str) -> int | None:
    """Transformer block index of a parameter name, or None for tensors outside every block."""
    split = split_block(name)
    return None if split is None else split[0]
