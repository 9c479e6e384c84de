"""Ground truth: scores the attacks' estimates against θ and the server's secrets.

This is the only audit module that receives θ or secrets; the attacks (attacks.py, align.py) never do.
"""
from __future__ import annotations

import math

import torch

from mpu_cli.mpu.aggregate import UpdateAccumulator
from mpu_cli.mpu.layout import ModelLayout, block_of
from mpu_cli.mpu.reparam import Transform, invert_transform

from .attacks import unique_names


class Scorer:
    def __init__(self, theta: dict, base: dict, secrets: dict, layout: ModelLayout):
        self.theta = {n: t.detach().double().clone() for n, t in theta.items()}  # a snapshot: θ_{r-1}
        self.base = base
        self.secrets = secrets
        self.layout = layout
        self.names = unique_names(theta)
        self.protected = [n for n in self.names if block_of(n) is not None]
        self._denom = {"protected": self._norm_diff(base, self.protected),
                       "all": self._norm_diff(base, self.names)}

    def _norm_diff(self, est: dict, names: list[str]) -> float:
        return math.sqrt(sum(float((est[n].double() - self.theta[n]).square().sum()) for n in names))

    def numel(self, names: list[str]) -> int:
        return sum(self.theta[n].numel() for n in names)

    def rel_error(self, est: dict) -> dict:
        """‖θ̂ − θ‖ / ‖θ − θ_base‖ over the protected (block) tensors and over all tensors."""
        return {part: self._norm_diff(est, names) / self._denom[part] if self._denom[part] else float("nan")
                for part, names in (("protected", self.protected), ("all", self.names))}

    def exact_fraction(self, copy: dict) -> float:
        """Fraction of parameters (elements) of a copy equal to θ."""
        equal = sum(int((copy[n].double() == self.theta[n]).sum()) for n in self.names)
        return equal / self.numel(self.names)

    def transform_accuracy(self, estimated: list[Transform]) -> dict:
        """Permutation accuracy (fraction of MLP channels mapped right) and angle error (radians, wrapped)."""
        true = self.secrets.get("transforms") or []
        if not true:
            return {}
        acc, errs = [], []
        for est, t in zip(estimated, true):
            for layer, perm in t.perms.items():
                acc.append(float((est.perms[layer] == perm).double().mean()))
                d = est.angles[layer] - t.angles[layer]
                errs.append(torch.atan2(torch.sin(d), torch.cos(d)).abs().reshape(-1))
        errs = torch.cat(errs)
        return {"perm_accuracy": sum(acc) / len(acc), "angle_err_mean_rad": float(errs.mean()),
                "angle_err_max_rad": float(errs.max())}

    def oracle(self, copies: list[dict]) -> dict:
        """θ from the copies WITH the secrets: Σ_k w_k T_k⁻¹(copy_k) — the zero-sum noise cancels exactly.

        The harness's known answer: it must equal θ to round-off.
        """
        weights = self.secrets.get("weights") or [1.0]
        transforms = self.secrets.get("transforms") or [None] * len(copies)
        acc = UpdateAccumulator()
        for copy, w, t in zip(copies, weights, transforms):
            x = {n: v.double() for n, v in copy.items()}
            acc.add(x if t is None else invert_transform(x, self.layout, t), w)
        return acc.result()

    def weights_error(self, est_weights: list[float] | None) -> float | None:
        """Max |ŵ_k − w_k| between A5's hull weights and the secret harmonic weights."""
        true = self.secrets.get("weights")
        if est_weights is None or not true or len(true) != len(est_weights):
            return None
        return max(abs(a - b) for a, b in zip(est_weights, true))
