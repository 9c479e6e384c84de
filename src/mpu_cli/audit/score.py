"""Ground truth: scores the attacks' estimates against θ and the server's secrets.

This is the only audit module that receives θ or secrets; the attacks (attacks.py, align.py) never do.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from mpu_cli.models.family import block_of
from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.reparam import Transform, invert_transform

from .align import AlignedCopy, estimate_transform, layer_names
from .attacks import ClientEstimates, HullPoint, float64_slices, sqdist64, unique_names


class Scorer:
    """θ (fp32 or any float dtype) is read tensor by tensor and must not change while scoring: the audit scores
    before the round is aggregated. Every error streams over one tensor, or one block, at a time. The base is
    read once (the errors' denominator) and not kept."""

    def __init__(self, theta: Mapping, base: Mapping, secrets: dict, layout: ModelLayout,
                 names: list[str] | None = None):
        self.theta = theta
        self.secrets = secrets
        self.layout = layout
        self.names = list(names) if names is not None else unique_names(theta)
        self.protected = [n for n in self.names if block_of(n) is not None]
        self._layers = layer_names(self.protected, layout.num_layers)
        self._denom = self._sq_errors(base)

    def _sq_errors(self, est: Mapping) -> dict:
        """Σ (θ̂ − θ)² over the protected tensors and over all tensors, float64, one tensor at a time."""
        out = {"protected": 0.0, "all": 0.0}
        for n in self.names:
            e = sqdist64(est[n], self.theta[n])
            out["all"] += e
            if block_of(n) is not None:
                out["protected"] += e
        return out

    def _ratio(self, sq: dict) -> dict:
        return {part: math.sqrt(sq[part] / self._denom[part]) if self._denom[part] else float("nan")
                for part in ("protected", "all")}

    def numel(self, names: list[str]) -> int:
        return sum(self.theta[n].numel() for n in names)

    def rel_error(self, est: Mapping) -> dict:
        """‖θ̂ − θ‖ / ‖θ − θ_base‖ over the protected (block) tensors and over all tensors."""
        return self._ratio(self._sq_errors(est))

    def rel_error_mod_T(self, est: Mapping) -> dict:
        """rel_error after the best function-preserving T aligning θ̂ to θ (found with θ: scorer-only).

        A θ̂ equal to T(θ) for some T of the public family is the same function as θ; this error discounts
        that (a residual gauge offset of the alignment), leaving the error that changes the model's function.
        The best T is found and applied block by block.
        """
        sq = {"protected": 0.0, "all": 0.0}
        for layer, names in self._layers.items():
            block = {n: est[n] for n in names}
            theta_block = {n: self.theta[n] for n in names}
            t = estimate_transform(block, theta_block, self.layout)
            back = invert_transform({n: x.float() for n, x in block.items()}, self.layout, t)
            e = sum(float((back[n].double() - theta_block[n].double()).square().sum()) for n in names)
            sq["protected"] += e
            sq["all"] += e
        for n in self.names:
            if block_of(n) is None:
                sq["all"] += sqdist64(est[n], self.theta[n])
        return self._ratio(sq)

    def exact_fraction(self, copy: Mapping) -> float:
        """Fraction of parameters (elements) of a copy equal to θ."""
        equal = sum(int((x == y).sum()) for n in self.names for x, y in float64_slices(copy[n], self.theta[n]))
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

    def oracle(self, copies: list[Mapping]) -> Mapping:
        """θ from the copies WITH the secrets: Σ_k w_k T_k⁻¹(copy_k) — the zero-sum noise cancels exactly.

        The harness's known answer: it must equal θ to round-off (up to the common noise, when the server adds
        one). Built tensor by tensor when read.
        """
        weights = self.secrets.get("weights") or [1.0]
        transforms = self.secrets.get("transforms") or [None] * len(copies)
        return HullPoint([AlignedCopy(c, t, self.layout) for c, t in zip(copies, transforms)], weights)

    def weights_error(self, est_weights: list[float] | None) -> float | None:
        """Max |ŵ_k − w_k| between A5's hull weights and the secret harmonic weights."""
        true = self.secrets.get("weights")
        if est_weights is None or not true or len(true) != len(est_weights):
            return None
        return max(abs(a - b) for a, b in zip(est_weights, true))


def _mean(dicts: list[dict]) -> dict:
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}


def estimate_errors(scorer: Scorer, est: Mapping, mod_t: bool = True) -> dict:
    """rel_err_{protected,all} and, with mod_t, the same mod T."""
    out = {f"rel_err_{k}": v for k, v in scorer.rel_error(est).items()}
    if mod_t:
        out |= {f"rel_err_{k}_mod_T": v for k, v in scorer.rel_error_mod_T(est).items()}
    return out


def score_client_attacks(est: ClientEstimates, scorer: Scorer, copies: list[Mapping], exposed_server: float) -> dict:
    """Every client-side attack scored against θ (and, for the alignment, the true T_k). Errors "mod T" are
    computed where they say something the raw error does not: for the aligned copies (A2) and the hull points
    A5 / A6 (a copy's raw error is the reparameterization's; A1 mod T is A2's; A4 is between A2 and A5)."""
    exposed_names = set(est.exact_names)
    out = {
        "A0": {"exposed_fraction": scorer.numel([n for n in scorer.names if n in exposed_names])
               / scorer.numel(scorer.names),
               "exact_fraction_true": sum(scorer.exact_fraction(c) for c in copies) / len(copies),
               "exposed_fraction_server": exposed_server},
        "A1": _mean([estimate_errors(scorer, AlignedCopy(c, None, scorer.layout), mod_t=False) for c in copies]),
        "base": estimate_errors(scorer, est.estimates["base"], mod_t=False),
    }
    for name in ("A2", "A3"):
        if name in est.aligned:
            out[name] = _mean([estimate_errors(scorer, a, mod_t=name == "A2") for a in est.aligned[name]])
            out[name] |= scorer.transform_accuracy(est.transforms[name])
    for name in ("A4", "A5"):
        if name in est.estimates:
            out[name] = estimate_errors(scorer, est.estimates[name], mod_t=name == "A5")
    if "A5" in out:
        out["A5"]["hull_weights"] = est.hull_weights
        out["A5"]["weights_max_abs_err"] = scorer.weights_error(est.hull_weights)
    out["oracle"] = estimate_errors(scorer, scorer.oracle(copies), mod_t=False)
    return out
