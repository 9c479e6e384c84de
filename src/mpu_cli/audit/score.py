"""Ground truth: scores the attacks' estimates against θ and the server's secrets.

This is the only audit module that receives θ or secrets; the attacks (attacks.py, align.py) never do.
"""
from __future__ import annotations

import math

import torch

from mpu_cli.models.family import block_of
from mpu_cli.mpu.aggregate import UpdateAccumulator
from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.reparam import Transform, invert_transform

from .align import align_to_reference
from .attacks import ClientEstimates, unique_names


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

    def rel_error_mod_T(self, est: dict) -> dict:
        """rel_error after the best function-preserving T aligning θ̂ to θ (found with θ: scorer-only).

        A θ̂ equal to T(θ) for some T of the public family is the same function as θ; this error discounts
        that (a residual gauge offset of the alignment), leaving the error that changes the model's function.
        """
        aligned, _ = align_to_reference(est, self.theta, self.layout)
        return self.rel_error(aligned)

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


def _mean(dicts: list[dict]) -> dict:
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}


def _errors(scorer: Scorer, est: dict, mod_t: bool = True) -> dict:
    out = {f"rel_err_{k}": v for k, v in scorer.rel_error(est).items()}
    if mod_t:
        out |= {f"rel_err_{k}_mod_T": v for k, v in scorer.rel_error_mod_T(est).items()}
    return out


def score_client_attacks(est: ClientEstimates, scorer: Scorer, copies: list[dict], exposed_server: float) -> dict:
    """Every client-side attack scored against θ (and, for the alignment, the true T_k)."""
    exposed_names = set(est.exact_names)
    out = {
        "A0": {"exposed_fraction": scorer.numel([n for n in scorer.names if n in exposed_names])
               / scorer.numel(scorer.names),
               "exact_fraction_true": sum(scorer.exact_fraction(c) for c in copies) / len(copies),
               "exposed_fraction_server": exposed_server},
        "A1": _mean([_errors(scorer, {n: t.float() for n, t in c.items()}) for c in copies]),
        "base": _errors(scorer, est.estimates["base"]),
    }
    for name in ("A2", "A3"):
        if name in est.aligned:
            out[name] = _mean([_errors(scorer, a) for a in est.aligned[name]])
            out[name] |= scorer.transform_accuracy(est.transforms[name])
    for name in ("A4", "A5"):
        if name in est.estimates:
            out[name] = _errors(scorer, est.estimates[name])
    if "A5" in out:
        out["A5"]["hull_weights"] = est.hull_weights
        out["A5"]["weights_max_abs_err"] = scorer.weights_error(est.hull_weights)
    out["oracle"] = _errors(scorer, scorer.oracle(copies), mod_t=False)
    return out
