"""Function-preserving reparameterization T (Pre-Process): MLP channel permutations and RoPE-plane rotations.

Layout conventions: HF parameter names, PyTorch [out, in] weights. For KV head j, S_j is a block of 2×2
rotations by angle φ on the planes (i, i + head_dim/2) — HF's rotate_half pairing, so S_j commutes with RoPE.
Forward T: q_h, k_j, v_j rows ← S_jᵀ·rows; o_proj column block of head h ← block·S_j. Both are "rotate the
head_dim axis by −φ"; T⁻¹ rotates by +φ. T is linear, so the same code undoes T on weights and on updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .layout import _BLOCK_RE, ModelLayout

_ROW_PERMUTED = ("mlp.gate_proj.weight", "mlp.gate_proj.bias", "mlp.up_proj.weight", "mlp.up_proj.bias")
_PASS_THROUGH = ("mlp.down_proj.bias", "self_attn.o_proj.bias", "self_attn.rotary_emb.inv_freq")


@dataclass
class Transform:
    """One copy's T for one round."""

    perms: dict[int, torch.Tensor]  # layer -> LongTensor[intermediate_size]
    angles: dict[int, torch.Tensor]  # layer -> float64 Tensor[num_kv_heads, head_dim // 2]


def sample_transform(layout: ModelLayout, generator: torch.Generator) -> Transform:
    perms, angles = {}, {}
    for layer in range(layout.num_layers):
        perms[layer] = torch.randperm(layout.intermediate_size, generator=generator)
        shape = (layout.num_kv_heads, layout.head_dim // 2)
        angles[layer] = torch.rand(shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
    return Transform(perms, angles)


def identity_transform(layout: ModelLayout) -> Transform:
    shape = (layout.num_kv_heads, layout.head_dim // 2)
    layers = range(layout.num_layers)
    return Transform(
        perms={layer: torch.arange(layout.intermediate_size) for layer in layers},
        angles={layer: torch.zeros(shape, dtype=torch.float64) for layer in layers},
    )


def _rotate_rows(x: torch.Tensor, angles: torch.Tensor, sign: float) -> torch.Tensor:
    """Rotate each head's row block by sign·φ on the planes (i, i + head_dim/2); float64 inside, dtype kept."""
    n_heads, half = angles.shape
    if x.shape[0] != n_heads * 2 * half:
        raise ValueError(f"tensor with {x.shape[0]} rows does not split into {n_heads} heads of {2 * half}")
    v = x.double().reshape(n_heads, 2 * half, -1)
    phi = angles.to(v.device).unsqueeze(-1)
    cos, sin = torch.cos(phi), sign * torch.sin(phi)
    a, b = v[:, :half], v[:, half:]
    return torch.cat((cos * a - sin * b, sin * a + cos * b), dim=1).reshape(x.shape).to(x.dtype)


def _transform_tensor(
    suffix: str, x: torch.Tensor, layout: ModelLayout, t: Transform, layer: int, inverse: bool
):
    perm = t.perms[layer].to(x.device)
    if inverse:
        perm = torch.argsort(perm)
    kv_angles = t.angles[layer]
    q_angles = kv_angles.repeat_interleave(
        layout.group_size, dim=0
    )  # query head h uses S of kv head h // group
    sign = 1.0 if inverse else -1.0
    if suffix in _ROW_PERMUTED:
        return x.index_select(0, perm)
    if suffix == "mlp.down_proj.weight":
        return x.index_select(1, perm)
    if suffix.startswith("self_attn.q_proj."):
        return _rotate_rows(x, q_angles, sign)
    if suffix.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
        return _rotate_rows(x, kv_angles, sign)
    if suffix == "self_attn.o_proj.weight":
        return _rotate_rows(x.T, q_angles, sign).T.contiguous()
    if suffix in _PASS_THROUGH or not suffix.startswith(("self_attn.", "mlp.")):
        return x  # norms and output biases live in hidden space, which T does not touch
    # e.g. fused qkv or per-head q_norm/k_norm: T would silently break the function
    raise NotImplementedError(f"reparameterization does not know how to transform {suffix!r}")


def _map(state: dict, layout: ModelLayout, t: Transform, inverse: bool) -> dict:
    out = {}
    for name, x in state.items():
        match = _BLOCK_RE.match(name)
        if match is None:
            out[name] = x
            continue
        layer = int(match.group(1))
        if layer not in t.perms:
            raise KeyError(f"transform has no entry for block {layer} (tensor {name!r})")
        out[name] = _transform_tensor(name[match.end() :], x, layout, t, layer, inverse)
    return out


def apply_transform(state: dict, layout: ModelLayout, t: Transform) -> dict:
    """T(state) as a new dict; tensors outside blocks are passed through; each tensor keeps its dtype."""
    return _map(state, layout, t, inverse=False)


def invert_transform(state: dict, layout: ModelLayout, t: Transform) -> dict:
    """T⁻¹(state); T is linear, so this undoes T on weights and on updates alike."""
    return _map(state, layout, t, inverse=True)
