"""Harmonic weights and the streaming update accumulator (Post-Process)."""

from __future__ import annotations

import torch


def harmonic_weights(alphas: list[float]) -> list[float]:
    """w_k = α_k⁻¹ / Σ_j α_j⁻¹: the only weights summing to 1 that cancel the first-order noise term."""
    if not alphas or any(a <= 0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of positive numbers, got {alphas}")
    inv = [1.0 / a for a in alphas]
    total = sum(inv)
    return [i / total for i in inv]


class UpdateAccumulator:
    """Running fp32 sum Σ w_k Δ_k; holds one sum, never the individual updates.

    Deltas may cover any subset of names, so a caller can stream tensor by tensor.
    """

    def __init__(self):
        self._sum: dict[str, torch.Tensor] = {}

    def add(self, delta: dict, weight: float, own: bool = False) -> None:
        """own: the deltas are the accumulator's to change (a first one is scaled in place, not copied)."""
        for name, d in delta.items():
            d32 = d.float()
            if name in self._sum:
                self._sum[name].add_(d32, alpha=weight)
            elif own:
                self._sum[name] = d32.mul_(weight)
            else:
                self._sum[name] = d32 * weight  # a fresh tensor: never aliases the caller's delta

    def result(self) -> dict:
        return self._sum
