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

from mpu_cli.models.family import COLUMNS, KEEP, PERMUTE, QUERY, split_block

from .layout import ModelLayout


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


_SLICE = 1 << 17  # elements rotated at once: a slice's float64 temporaries stay in the core's cache


def _rotate(x: torch.Tensor, angles: torch.Tensor, sign: float, columns: bool) -> torch.Tensor:
    """Rotate each head's block of the head axis (the rows, or the columns) by sign·φ on the planes
    (i, i + head_dim/2); float64 inside, dtype kept. Done a slice of the other axis at a time (each element gets
    the same float64 operations in the same order, whatever the slice)."""
    n_heads, half = angles.shape
    length = x.shape[1] if columns else x.shape[0]
    if length != n_heads * 2 * half:
        raise ValueError(f"tensor with {length} {'columns' if columns else 'rows'} does not split into {n_heads} "
                         f"heads of {2 * half}")
    if x.dim() < 2:
        return _rotated(x, angles, sign, columns)
    other = 0 if columns else 1
    out = torch.empty_like(x)
    step = max(1, _SLICE // length)
    for a in range(0, x.shape[other], step):
        n = min(step, x.shape[other] - a)
        out.narrow(other, a, n).copy_(_rotated(x.narrow(other, a, n), angles, sign, columns))
    return out


def _rotated(x: torch.Tensor, angles: torch.Tensor, sign: float, columns: bool) -> torch.Tensor:
    """`_rotate` on a whole tensor: the products and sums are written into one output (no concatenation, no
    transposed copy)."""
    n_heads, half = angles.shape
    v = x.double()
    phi = angles.to(v.device)
    if columns:  # [rows, head, plane half, i]
        v, half_axis = v.reshape(x.shape[0], n_heads, 2, half), 2
    else:  # [head, plane half, i, cols]
        v, half_axis, phi = v.reshape(n_heads, 2, half, -1), 1, phi.unsqueeze(-1)
    cos, sin = torch.cos(phi), sign * torch.sin(phi)
    a, b = v.select(half_axis, 0), v.select(half_axis, 1)
    out = torch.empty_like(v)
    first, second = out.select(half_axis, 0), out.select(half_axis, 1)
    tmp = torch.empty(a.shape, dtype=v.dtype, device=v.device)
    torch.mul(cos, a, out=first)
    first.sub_(torch.mul(sin, b, out=tmp))  # cos·a − sin·b
    torch.mul(sin, a, out=second)
    second.add_(torch.mul(cos, b, out=tmp))  # sin·a + cos·b
    return out.reshape(x.shape).to(x.dtype)


def _angles(layout: ModelLayout, t: Transform, layer: int, heads: str) -> torch.Tensor:
    kv_angles = t.angles[layer]
    # query head h uses S of kv head h // group
    return kv_angles.repeat_interleave(layout.group_size, dim=0) if heads == QUERY else kv_angles


def _transform_tensor(
    suffix: str, x: torch.Tensor, layout: ModelLayout, t: Transform, layer: int, inverse: bool
):
    role = layout.family.role(suffix)  # an undeclared block tensor is refused, never passed through
    if role.op == KEEP:
        return x
    if role.op == PERMUTE:
        perm = t.perms[layer].to(x.device)
        return x.index_select(role.axis, torch.argsort(perm) if inverse else perm)
    angles, sign = _angles(layout, t, layer, role.heads), 1.0 if inverse else -1.0
    return _rotate(x, angles, sign, columns=role.axis == COLUMNS)


def _map(state: dict, layout: ModelLayout, t: Transform, inverse: bool) -> dict:
    out = {}
    for name, x in state.items():
        split = split_block(name)
        if split is None:
            out[name] = x
            continue
        layer, suffix = split
        if layer not in t.perms:
            raise KeyError(f"transform has no entry for block {layer} (tensor {name!r})")
        out[name] = _transform_tensor(suffix, x, layout, t, layer, inverse)
    return out


def moves_only(name: str, layout: ModelLayout) -> bool:
    """T changes no value of this tensor, only where each value sits (a permutation, or nothing), so T commutes
    with any elementwise map, a cast included; False where T rotates."""
    split = split_block(name)
    return split is None or layout.family.role(split[1]).op in (KEEP, PERMUTE)


def apply_transform(state: dict, layout: ModelLayout, t: Transform) -> dict:
    """T(state) as a new dict; tensors outside blocks are passed through; each tensor keeps its dtype."""
    return _map(state, layout, t, inverse=False)


def invert_transform(state: dict, layout: ModelLayout, t: Transform) -> dict:
    """T⁻¹(state); T is linear, so this undoes T on weights and on updates alike."""
    return _map(state, layout, t, inverse=True)


def invert_lora(name: str, a: torch.Tensor, b: torch.Tensor, layout: ModelLayout, t: Transform):
    """T⁻¹ on the LoRA factors (A [r, in], B [out, r]) of an update B·A to the tensor `name`, as (A', B') with
    B'·A' = T⁻¹(B·A): a role on the rows (output side) acts on B's rows, one on the columns on A's columns; kept
    tensors and tensors outside every block keep both factors."""
    split = split_block(name)
    if split is None:
        return a, b
    layer, suffix = split
    role = layout.family.role(suffix)
    if role.op == KEEP:
        return a, b
    if role.axis == COLUMNS:
        return _transform_tensor(suffix, a, layout, t, layer, inverse=True), b
    return a, _transform_tensor(suffix, b, layout, t, layer, inverse=True)
