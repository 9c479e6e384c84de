"""Undoing the reparameterization T_k of a published copy by matching it to the public base θ_base.

Attacker-side code: every function here takes only a published copy, the public base and the public
architecture (ModelLayout). The reparameterization *family* is public (Kerckhoffs); its parameters are not.

- MLP: published row i of gate/up (and column i of down) is original channel perm[i]. We estimate perm by a
  linear assignment between the copy's channels and the base's channels, cost = squared distance between the
  concatenated (gate row, up row, down column[, biases]) feature vectors.
- Attention: for KV head j and RoPE plane p (dims p and p + head_dim/2) the copy's row pairs are the base's
  rotated by −φ_jp (plus fine-tuning difference and noise). Every tensor the server rotates with S_j — k and v
  rows of head j, q rows and o_proj columns of the query heads of group j, q/k/v biases — gives 2-D points;
  the 2-D orthogonal Procrustes solution is ψ = atan2(M10 − M01, M00 + M11), M = X_copy X_baseᵀ, and φ = −ψ.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from mpu_cli.models.family import COLUMNS, KV, PERMUTE, QUERY, ROTATE, ROWS, Family, split_block
from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.reparam import Transform, invert_transform


def layer_names(names, num_layers: int) -> dict[int, list[str]]:
    """{layer: names of block `layer`} for layers 0..num_layers−1 (names outside every block left out)."""
    out: dict[int, list[str]] = {layer: [] for layer in range(num_layers)}
    for name in names:
        split = split_block(name)
        if split is not None and split[0] in out:
            out[split[0]].append(name)
    return out


def block_tensors(state: Mapping, names: list[str]) -> dict[str, torch.Tensor]:
    """{suffix: tensor} of the given names of one block (suffix = the name after "layers.{l}."), each read
    from `state` when needed: a lazily read copy is read one block at a time."""
    return {split_block(n)[1]: state[n] for n in names}


def _mlp_features(block: dict, family: Family) -> torch.Tensor:
    """[d_ff, F] float64: one row per hidden channel (gate row, up row, down column, then biases if any)."""
    weights, biases = [], []
    for suffix in family.members(PERMUTE):
        t = block.get(suffix)
        if t is None:
            continue
        if t.dim() == 1:
            biases.append(t.unsqueeze(1))
        else:
            weights.append(t.T if family.role(suffix).axis == COLUMNS else t)
    return torch.cat([p.double() for p in weights + biases], dim=1)


def match_mlp_channels(copy_block: dict, base_block: dict, family: Family) -> torch.Tensor:
    """Estimated perm (LongTensor[d_ff]): copy channel i is base channel perm[i] (reparam.py's convention)."""
    fc, fb = _mlp_features(copy_block, family), _mlp_features(base_block, family)
    # squared Euclidean distance, in float64; the constant ‖fc_i‖² does not change the assignment but keeps
    # the cost a distance (non-negative, interpretable)
    cost = (fc.square().sum(1, keepdim=True) + fb.square().sum(1) - 2.0 * fc @ fb.T).numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm)


def _head_points(block: dict, layout: ModelLayout) -> torch.Tensor:
    """[num_kv_heads, head_dim, N] float64: every vector the server rotates with S_j, per KV head j."""
    hd, g, kv = layout.head_dim, layout.group_size, layout.num_kv_heads

    def per_head(x: torch.Tensor, n_heads: int) -> torch.Tensor:  # rows grouped by head -> [n_heads, hd, cols]
        x = x.double()
        if x.dim() == 1:
            x = x.unsqueeze(1)
        return x.reshape(n_heads, hd, -1)

    def group_q(x: torch.Tensor) -> torch.Tensor:  # query heads of group j side by side -> [kv, hd, g*cols]
        q = per_head(x, layout.num_heads)
        return q.reshape(kv, g, hd, -1).permute(0, 2, 1, 3).reshape(kv, hd, -1)

    family, parts = layout.family, []
    # KV rows, then query rows, then o_proj's query columns (as [hd, rows] blocks)
    for heads, axis, split in ((KV, ROWS, lambda t: per_head(t, kv)), (QUERY, ROWS, group_q),
                               (QUERY, COLUMNS, lambda t: group_q(t.T))):
        for suffix in family.members(ROTATE, heads, axis):
            t = block.get(suffix)
            if t is not None:
                parts.append(split(t))
    return torch.cat(parts, dim=2)


def match_plane_angles(copy_block: dict, base_block: dict, layout: ModelLayout) -> torch.Tensor:
    """Estimated angles (float64 [num_kv_heads, head_dim/2]) of the RoPE-plane rotations, in [0, 2π)."""
    half = layout.head_dim // 2
    pc, pb = _head_points(copy_block, layout), _head_points(base_block, layout)
    ac, bc = pc[:, :half], pc[:, half:]
    ab, bb = pb[:, :half], pb[:, half:]
    m00, m01 = (ac * ab).sum(-1), (ac * bb).sum(-1)
    m10, m11 = (bc * ab).sum(-1), (bc * bb).sum(-1)
    psi = torch.atan2(m10 - m01, m00 + m11)  # copy ≈ R(ψ)·base, and the server rotated by −φ
    return torch.remainder(-psi, 2 * math.pi)


def estimate_transform(copy: Mapping, base: Mapping, layout: ModelLayout) -> Transform:
    """T̂ for one published copy, from the copy and the public base only (one block in memory at a time); a
    copy restricted to some blocks gets a T̂ for those blocks."""
    perms, angles = {}, {}
    for layer, names in layer_names(copy.keys(), layout.num_layers).items():
        if not names:
            continue
        cb, bb = block_tensors(copy, names), block_tensors(base, names)
        perms[layer] = match_mlp_channels(cb, bb, layout.family)
        angles[layer] = match_plane_angles(cb, bb, layout)
    return Transform(perms, angles)


class AlignedCopy(Mapping):
    """T̂⁻¹(copy) in fp32, each tensor computed when asked for (T is linear and acts tensor by tensor)."""

    def __init__(self, copy: Mapping, transform: Transform | None, layout: ModelLayout):
        self.copy, self.transform, self.layout = copy, transform, layout

    def __getitem__(self, name: str) -> torch.Tensor:
        x = {name: self.copy[name].float()}
        return x[name] if self.transform is None else invert_transform(x, self.layout, self.transform)[name]

    def __contains__(self, name) -> bool:
        return name in self.copy  # without reading the tensor

    def __iter__(self):
        return iter(self.copy.keys())

    def __len__(self) -> int:
        return len(self.copy.keys())


def align_copy(copy: Mapping, base: Mapping, layout: ModelLayout) -> tuple[AlignedCopy, Transform]:
    """(T̂⁻¹(copy) in fp32, read lazily, T̂): the copy brought back into the base's coordinates."""
    est = estimate_transform(copy, base, layout)
    return AlignedCopy(copy, est, layout), est


def align_to_reference(copy: Mapping, reference: Mapping, layout: ModelLayout) -> tuple[AlignedCopy, Transform]:
    """Same as align_copy, with any reference in base coordinates (e.g. a copy already aligned)."""
    return align_copy(copy, reference, layout)
