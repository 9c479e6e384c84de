"""Post-Process of a round whose client returned LoRA adapters (client.lora) instead of whole copies.

Copy k returns factors A_k [r, in], B_k [out, r] per weight, and its update in published coordinates is
Δ'_k = s_k·B_k·A_k (s_k = lora_alpha / r of its adapter). T_k acts on one side of each weight, so
T_k⁻¹(B_k·A_k) = T_k⁻¹(B_k)·A_k or B_k·T_k⁻¹(A_k) (reparam.invert_lora), and the harmonic aggregate of one
weight, Σ_k w_k s_k T_k⁻¹(B_k·A_k), is one product of the stacked factors [w_1 s_1 B'_1 … w_m s_m B'_m]·[A'_1; …;
A'_m]. The weights w_k and transforms T_k are the pending round's, as `MPUServer.aggregate` uses them (the clean and
noised arms: one copy, w = 1, no T); `MPUServer.merge` adds the result to θ, one weight built at a time.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mpu_cli.finite import check_tensor
from mpu_cli.models.family import block_of
from mpu_cli.models.lora import factor_pairs

from .reparam import invert_lora


def aggregate_adapters(server, adapters: Sequence[Mapping[str, torch.Tensor]], scalings: Sequence[float],
                       out=None) -> dict:
    """θ ← θ + η Σ_k w_k s_k T_k⁻¹(B_k·A_k) for the pending round of `server` (an MPUServer); adapters[k]: copy k's
    factors under peft's names (a dict or a lazily read file), scalings[k] its lora_alpha / r; out: where θ_r is
    written tensor by tensor (`MPUServer.merge`), None: kept in memory. Returns the new θ."""
    secrets = server.private_state()
    if not server.pending:
        raise RuntimeError("aggregate_adapters() called without a published round; call publish() first")
    if len(adapters) != server.n_copies or len(scalings) != len(adapters):
        raise ValueError(f"expected {server.n_copies} returned adapters (and scalings) for round {server.round}, "
                         f"got {len(adapters)} ({len(scalings)})")
    pairs = [factor_pairs(a.keys()) for a in adapters]
    weights = sorted(pairs[0])
    for k, p in enumerate(pairs[1:], start=2):
        if sorted(p) != weights:
            raise ValueError(f"returned adapter of copy {k} covers other weights than copy 1's")
    spec = server.published_spec()
    for weight in weights:
        if weight not in spec or len(spec[weight][0]) != 2 or block_of(weight) is None:
            raise ValueError(f"returned adapter: {weight!r} is not a matrix inside a transformer block; accepted: "
                             "adapters on the blocks' projections")
    update = LowRankUpdate(server, adapters, pairs, weights, [w * s for w, s in zip(secrets["weights"], scalings)],
                           secrets["transforms"])
    return server.merge(update, out=out)


class LowRankUpdate(Mapping):
    """weight name -> Σ_k c_k T_k⁻¹(B_k·A_k) (fp32), built when read from the stacked factors; holds no dense
    tensor. c_k = w_k s_k; transforms empty: the arm publishes its copies untransformed."""

    def __init__(self, server, adapters, pairs, weights: list[str], coefficients: list[float], transforms: list):
        self._server, self._adapters, self._pairs = server, adapters, pairs
        self._shapes = {n: shape for n, (shape, _) in server.published_spec().items()}
        self._weights, self._coefficients, self._transforms = weights, coefficients, transforms

    def __len__(self) -> int:
        return len(self._weights)

    def __iter__(self):
        return iter(self._weights)

    def __getitem__(self, weight: str) -> torch.Tensor:
        out, inp = self._shapes[weight]
        left, right = [], []
        for k, adapter in enumerate(self._adapters):
            a_key, b_key = self._pairs[k][weight]
            a, b = adapter[a_key].float(), adapter[b_key].float()
            where = f"round {self._server.round}, returned adapter {k + 1}"
            if a.dim() != 2 or b.dim() != 2 or a.shape[1] != inp or b.shape[0] != out or a.shape[0] != b.shape[1]:
                raise ValueError(f"{where}: factors of {weight!r} have shapes {tuple(a.shape)} and {tuple(b.shape)}, "
                                 f"expected (r, {inp}) and ({out}, r)")
            for key, t in ((a_key, a), (b_key, b)):
                check_tensor(key, t, where, "the adapter's factor")
            if self._transforms:
                a, b = invert_lora(weight, a, b, self._server.layout, self._transforms[k])
            left.append(b * self._coefficients[k])
            right.append(a)
        return torch.cat(left, dim=1) @ torch.cat(right, dim=0)
