"""The attacks. Every function here sees only what its party sees — never θ, seeds, α, σ or T_k.

Client side (a curious client): the m published copies, the public base θ_base and the public architecture.
  A0  which tensors are published exactly (equal in every copy)
  A1  take one copy as θ
  A2  align each copy to θ_base (MLP permutations by assignment, RoPE-plane angles by 2-D Procrustes)
  A3  align copies 2..m to the aligned copy 1 instead of the base (copy-to-copy differ only by noise)
  A4  align, then average the copies
  A5  align, then take the point of the copies' affine hull closest to θ_base (θ = Σ w_k x_k lies on it)
Server side (a curious server): θ_{r-1}, θ_r and a pool of candidate texts.
  B1  rank candidates by how much their loss rose from θ_{r-1} to θ_r (forget items should rise most)

Ground truth lives in score.py; nothing in this module imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata

from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.reparam import Transform

from .align import align_copy, align_to_reference


@dataclass
class ClientView:
    """Everything a client holds: the published copies of one round, the public base, the architecture."""

    copies: list[dict]
    base: dict
    layout: ModelLayout


@dataclass
class ClientEstimates:
    """What the client-side attacks produce (estimates only; scored elsewhere)."""

    exact_names: list[str]  # A0: tensors equal across all copies
    estimates: dict[str, dict] = field(default_factory=dict)  # attack -> θ̂ (fp32 state dict)
    transforms: dict[str, list[Transform]] = field(default_factory=dict)  # attack -> T̂_k per copy
    aligned: dict[str, list[dict]] = field(default_factory=dict)  # attack -> aligned copies (per-copy error)
    hull_weights: list[float] | None = None  # A5: the weights of θ̂ on the aligned copies (sum to 1)


def unique_names(state: dict) -> list[str]:
    """Names with tied (aliased) tensors counted once, e.g. embed_tokens / lm_head of a tied model."""
    seen, out = set(), []
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else name
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


# ---- A0 / A1 -------------------------------------------------------------------------------------------------

def a0_exact_tensors(copies: list[dict]) -> list[str]:
    """Tensors bit-identical in every copy: with m ≥ 2 independent noises they must be unperturbed."""
    if len(copies) < 2:
        return []  # one copy: nothing to compare
    first = copies[0]
    return [n for n in unique_names(first) if all(torch.equal(first[n], c[n]) for c in copies[1:])]


def a1_single_copy(copies: list[dict]) -> dict:
    return {n: t.float() for n, t in copies[0].items()}


# ---- A2 / A3 -------------------------------------------------------------------------------------------------

def a2_align_to_base(view: ClientView) -> tuple[list[dict], list[Transform]]:
    aligned, transforms = [], []
    for copy in view.copies:
        a, t = align_copy(copy, view.base, view.layout)
        aligned.append(a)
        transforms.append(t)
    return aligned, transforms


def a3_align_to_first(view: ClientView, first_aligned: dict, first_transform: Transform
                      ) -> tuple[list[dict], list[Transform]]:
    """Copies 2..m aligned to the aligned copy 1: the residual is noise only, no fine-tuning difference."""
    aligned, transforms = [first_aligned], [first_transform]
    for copy in view.copies[1:]:
        a, t = align_to_reference(copy, first_aligned, view.layout)
        aligned.append(a)
        transforms.append(t)
    return aligned, transforms


# ---- A4 / A5 -------------------------------------------------------------------------------------------------

def a4_average(aligned: list[dict]) -> dict:
    return {n: torch.stack([a[n].float() for a in aligned]).mean(0) for n in aligned[0]}


def _dot(x: dict, y: dict, names: list[str]) -> float:
    return float(sum((x[n].double() * y[n].double()).sum() for n in names))


def a5_hull_closest_to_base(aligned: list[dict], base: dict) -> tuple[dict, list[float]]:
    """The point Σ w_k x_k (Σ w_k = 1) of the aligned copies' affine hull closest to θ_base.

    θ itself lies on the hull (with the harmonic weights, Σ w_k α_k ε⁰_k = 0); the hull's directions are pure
    noise, nearly orthogonal to θ − θ_base, so the closest point to θ_base is close to θ. α is never used.
    """
    names = unique_names(aligned[0])
    x1 = aligned[0]
    if len(aligned) == 1:
        return {n: t.float().clone() for n, t in x1.items()}, [1.0]
    dirs = [{n: a[n].double() - x1[n].double() for n in names} for a in aligned[1:]]
    gap = {n: base[n].double() - x1[n].double() for n in names}
    k = len(dirs)
    gram = np.array([[_dot(dirs[i], dirs[j], names) for j in range(k)] for i in range(k)])
    rhs = np.array([_dot(dirs[i], gap, names) for i in range(k)])
    coef = np.linalg.lstsq(gram, rhs, rcond=None)[0] if np.abs(gram).max() > 0 else np.zeros(k)
    est = {}
    for n, t in x1.items():
        v = t.double().clone()
        if n in gap:
            for c, d in zip(coef, dirs):
                v += float(c) * d[n]
        est[n] = v.float()
    return est, [float(1.0 - coef.sum()), *map(float, coef)]


def client_attacks(view: ClientView, align_copies: bool = True) -> ClientEstimates:
    """A0–A5 from the client's view only."""
    out = ClientEstimates(exact_names=a0_exact_tensors(view.copies))
    out.estimates["A1"] = a1_single_copy(view.copies)
    out.estimates["base"] = {n: t.float() for n, t in view.base.items()}  # reference: the public base as θ̂
    if not align_copies:
        return out
    aligned, transforms = a2_align_to_base(view)
    out.aligned["A2"], out.transforms["A2"] = aligned, transforms
    out.estimates["A2"] = aligned[0]
    a3, t3 = a3_align_to_first(view, aligned[0], transforms[0])
    out.aligned["A3"], out.transforms["A3"] = a3, t3
    out.estimates["A4"] = a4_average(a3)
    out.estimates["A5"], out.hull_weights = a5_hull_closest_to_base(a3, view.base)
    return out


# ---- B1 (server side) ----------------------------------------------------------------------------------------

def auc(positive_scores, negative_scores) -> float:
    """P(score of a random positive > score of a random negative), ties counted ½ (Mann–Whitney U / n_p n_n)."""
    pos, neg = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def b1_loss_change_scores(loss_before, loss_after) -> np.ndarray:
    """The server's membership score per candidate: its loss increase from θ_{r-1} to θ_r."""
    return np.asarray(loss_after, float) - np.asarray(loss_before, float)


def b1_rank_forget_items(losses_before: dict[str, list[float]], losses_after: dict[str, list[float]],
                         positive: str = "forget") -> dict:
    """AUC of the loss-change ranking: `positive` candidates against each other group and all together.

    The labels are what the audit scores against; the ranking itself uses only the two models' losses.
    """
    scores = {g: b1_loss_change_scores(losses_before[g], losses_after[g]) for g in losses_before}
    negatives = [g for g in scores if g != positive]
    out = {"auc": auc(scores[positive], np.concatenate([scores[g] for g in negatives]))}
    for g in negatives:
        out[f"auc_vs_{g}"] = auc(scores[positive], scores[g])
    out["n"] = {g: len(s) for g, s in scores.items()}
    return out


def item_losses(model, examples: list[dict], pad: int, batch_size: int = 32) -> list[float]:
    """Mean answer-token NLL per item (the evaluator's per-item loss)."""
    from mpu_cli.evals.batched import score_sequences

    return [s.avg_loss for s in score_sequences(model, examples, batch_size, pad)]
