"""The attacks. Every function here sees only what its party sees — never θ, seeds, α, σ or T_k.

Client side (a curious client): the m published copies, the public base θ_base, the public architecture and,
for A6, its own forget set.
  A0  which tensors are published exactly (equal in every copy)
  A1  take one copy as θ
  A2  align each copy to θ_base (MLP permutations by assignment, RoPE-plane angles by 2-D Procrustes)
  A3  align copies 2..m to the aligned copy 1 instead of the base (copy-to-copy differ only by noise)
  A4  align, then average the copies
  A5  align, then take the point of the copies' affine hull closest to θ_base (θ = Σ w_k x_k lies on it)
  A6  align, then take the point of the hull under which the model best fits the client's own forget set D_f
Server side (a curious server): θ_{r-1}, θ_r and a pool of candidate texts.
  B1  rank candidates by how much their loss rose from θ_{r-1} to θ_r (forget items should rise most)

Ground truth lives in score.py; nothing in this module imports it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata

from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.reparam import Transform

from .align import AlignedCopy, align_copy, align_to_reference

# float64 work on a tensor goes in slices along its first dimension of at most this many elements (32 MiB in
# float64): the largest tensors (a vocabulary-sized embedding) never get a whole float64 copy.
CHUNK_ELEMENTS = 1 << 22


def row_slices(t: torch.Tensor, elements: int | None = None):
    """Indices of `t` along its first dimension, each covering at most `elements` elements (at least one row);
    a small (or 0-d) tensor comes whole."""
    elements = elements or CHUNK_ELEMENTS
    if t.dim() == 0 or t.numel() <= elements:
        yield ...
        return
    rows = max(1, elements // max(1, t[0].numel()))
    for i in range(0, t.shape[0], rows):
        yield slice(i, i + rows)


def float64_slices(*tensors: torch.Tensor, elements: int | None = None):
    """Matching slices of same-shaped tensors (row_slices of the first), as float64. Sums over the slices differ
    from sums over the whole tensor only in the order of summation."""
    for idx in row_slices(tensors[0], elements):
        yield tuple(t[idx].double() for t in tensors)


def sqdist64(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖² accumulated in float64, slice by slice."""
    return sum(float((x - y).square().sum()) for x, y in float64_slices(a, b))


@dataclass
class ClientView:
    """Everything a client holds: the published copies of one round, the public base, the architecture.

    Copies and base are mappings name -> tensor; they may read each tensor when asked for (a file-backed copy),
    and every attack here reads them one tensor (or one block) at a time."""

    copies: list[Mapping]
    base: Mapping
    layout: ModelLayout


@dataclass
class ClientEstimates:
    """What the client-side attacks produce (estimates only; scored elsewhere). Every θ̂ is a mapping that
    builds each tensor when read, so no estimate is ever held whole."""

    exact_names: list[str]  # A0: tensors equal across all copies
    estimates: dict[str, Mapping] = field(default_factory=dict)  # attack -> θ̂ (fp32 tensors)
    transforms: dict[str, list[Transform]] = field(default_factory=dict)  # attack -> T̂_k per copy
    aligned: dict[str, list[Mapping]] = field(default_factory=dict)  # attack -> aligned copies (per-copy error)
    hull_weights: list[float] | None = None  # A5: the weights of θ̂ on the aligned copies (sum to 1)


def unique_names(state: Mapping) -> list[str]:
    """Names with tied (aliased) tensors counted once, e.g. embed_tokens / lm_head of a tied model. A mapping
    that reads tensors lazily has no aliases to find: its names are already unique."""
    if not isinstance(state, dict):
        return list(state.keys())
    seen, out = set(), []
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else name
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


# ---- A0 / A1 -------------------------------------------------------------------------------------------------

def a0_exact_tensors(copies: list[Mapping]) -> list[str]:
    """Tensors bit-identical in every copy: with m ≥ 2 independent noises they must be unperturbed."""
    if len(copies) < 2:
        return []  # one copy: nothing to compare
    first = copies[0]
    out = []
    for n in unique_names(first):
        x = first[n]
        if all(torch.equal(x, c[n]) for c in copies[1:]):
            out.append(n)
    return out


def a1_single_copy(copies: list[Mapping], layout: ModelLayout) -> Mapping:
    return AlignedCopy(copies[0], None, layout)


# ---- A2 / A3 -------------------------------------------------------------------------------------------------

def a2_align_to_base(view: ClientView) -> tuple[list[Mapping], list[Transform]]:
    aligned, transforms = [], []
    for copy in view.copies:
        a, t = align_copy(copy, view.base, view.layout)
        aligned.append(a)
        transforms.append(t)
    return aligned, transforms


def a3_align_to_first(view: ClientView, first_aligned: Mapping, first_transform: Transform
                      ) -> tuple[list[Mapping], list[Transform]]:
    """Copies 2..m aligned to the aligned copy 1: the residual is noise only, no fine-tuning difference."""
    aligned, transforms = [first_aligned], [first_transform]
    for copy in view.copies[1:]:
        a, t = align_to_reference(copy, first_aligned, view.layout)
        aligned.append(a)
        transforms.append(t)
    return aligned, transforms


# ---- A4 / A5: points of the aligned copies' affine hull ------------------------------------------------------

class HullPoint(Mapping):
    """Σ_k w_k x_k of the aligned copies (Σ w_k = 1), each tensor computed in float64 when read (slice by slice),
    fp32 out."""

    def __init__(self, aligned: list[Mapping], weights: list[float]):
        self.aligned, self.weights = aligned, [float(w) for w in weights]

    def __getitem__(self, name: str) -> torch.Tensor:
        xs = [a[name] for a in self.aligned]
        out = torch.empty(xs[0].shape, dtype=torch.float32)
        for idx in row_slices(xs[0]):
            v = None
            for w, x in zip(self.weights, xs):
                x = x[idx].double() * w
                v = x if v is None else v.add_(x)
            out[idx] = v
        return out

    def __contains__(self, name) -> bool:
        return name in self.aligned[0]

    def __iter__(self):
        return iter(self.aligned[0])

    def __len__(self) -> int:
        return len(self.aligned[0])


def a4_average(aligned: list[Mapping]) -> HullPoint:
    return HullPoint(aligned, [1.0 / len(aligned)] * len(aligned))


def hull_gram(aligned: list[Mapping], target: Mapping | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(G, b): G_ij = ⟨d_i, d_j⟩ of the hull's directions d_i = x_{i+1} − x_1 and b_i = ⟨d_i, target − x_1⟩
    (b = 0 without a target), accumulated tensor by tensor (and slice by slice) in float64."""
    k = len(aligned) - 1
    gram, rhs = np.zeros((k, k)), np.zeros(k)
    for n in unique_names(aligned[0]):
        xs = [a[n] for a in aligned] + ([] if target is None else [target[n]])
        for parts in float64_slices(*xs):
            x1 = parts[0]
            dirs = [x - x1 for x in parts[1:k + 1]]
            gap = None if target is None else parts[-1] - x1
            for i in range(k):
                for j in range(i, k):
                    gram[i, j] += float((dirs[i] * dirs[j]).sum())
                if gap is not None:
                    rhs[i] += float((dirs[i] * gap).sum())
    return np.triu(gram) + np.triu(gram, 1).T, rhs


def coef_weights(coef) -> list[float]:
    """Hull weights (Σ = 1) from the coefficients c on the directions d_i = x_{i+1} − x_1."""
    return [float(1.0 - np.sum(coef)), *map(float, coef)]


def a5_hull_closest_to_base(aligned: list[Mapping], base: Mapping) -> tuple[HullPoint, list[float]]:
    """The point Σ w_k x_k (Σ w_k = 1) of the aligned copies' affine hull closest to θ_base.

    θ itself lies on the hull (with the harmonic weights, Σ w_k α_k ε⁰_k = 0); the hull's directions are pure
    noise, nearly orthogonal to θ − θ_base, so the closest point to θ_base is close to θ. α is never used.
    """
    if len(aligned) == 1:
        return HullPoint(aligned, [1.0]), [1.0]
    gram, rhs = hull_gram(aligned, base)
    coef = np.linalg.lstsq(gram, rhs, rcond=None)[0] if np.abs(gram).max() > 0 else np.zeros(len(rhs))
    weights = coef_weights(coef)
    return HullPoint(aligned, weights), weights


def client_attacks(view: ClientView, align_copies: bool = True, phase=None) -> ClientEstimates:
    """A0–A5 from the client's view only. phase(name): a context manager measuring each attack (A4 and A5
    start from the A3 alignment; their estimates are built when read)."""
    phase = phase or (lambda name: nullcontext())
    with phase("A0"):
        out = ClientEstimates(exact_names=a0_exact_tensors(view.copies))
    out.estimates["A1"] = a1_single_copy(view.copies, view.layout)
    out.estimates["base"] = AlignedCopy(view.base, None, view.layout)  # reference: the public base as θ̂
    if not align_copies:
        return out
    with phase("A2"):
        aligned, transforms = a2_align_to_base(view)
    out.aligned["A2"], out.transforms["A2"] = aligned, transforms
    out.estimates["A2"] = aligned[0]
    with phase("A3"):
        a3, t3 = a3_align_to_first(view, aligned[0], transforms[0])
    out.aligned["A3"], out.transforms["A3"] = a3, t3
    out.estimates["A4"] = a4_average(a3)
    with phase("A5"):
        out.estimates["A5"], out.hull_weights = a5_hull_closest_to_base(a3, view.base)
    return out


# ---- A6: the hull point under which the model best fits the client's own forget set --------------------------

def forget_loss(examples: list[dict], pad: int, batch_size: int = 8) -> Callable:
    """loss(model) -> the mean answer-token NLL of `examples` (the client's D_f), gradients left in .grad."""
    from mpu_cli.data.formatting import collate_right
    from mpu_cli.logprobs import sequence_nll

    def run(model) -> float:
        model.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for i in range(0, len(examples), batch_size):
            batch = collate_right(examples[i:i + batch_size], pad)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            nll, n = sequence_nll(out.logits, batch["labels"])
            nll.sum().backward()
            total, tokens = total + float(nll.sum()), tokens + int(n.sum())
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(tokens)
        return total / tokens
    return run


class _HullModel:
    """A model whose parameters are set to hull points; the loss's gradient in hull coordinates
    g_i = ⟨∇L, x_{i+1} − x_1⟩, everything tensor by tensor (the aligned copies are read, never held)."""

    def __init__(self, aligned: list[Mapping], model, loss: Callable):
        self.aligned, self.model, self.loss = aligned, model, loss
        self.params = dict(model.named_parameters())  # tied weights appear once
        self.names = [n for n in self.params if n in aligned[0]]

    def set(self, coef) -> None:
        point = HullPoint(self.aligned, coef_weights(coef))
        with torch.no_grad():
            for n in self.names:
                self.params[n].copy_(point[n])

    def value_and_grad(self, coef) -> tuple[float, np.ndarray]:
        self.set(coef)
        self.model.eval()
        with torch.enable_grad():
            value = self.loss(self.model)
        g = np.zeros(len(self.aligned) - 1)
        for n in self.names:
            grad = self.params[n].grad
            if grad is None:
                continue
            for gr, x1, *others in float64_slices(grad, *(a[n] for a in self.aligned)):
                for i, x in enumerate(others):
                    g[i] += float((gr * (x - x1)).sum())
        self.model.zero_grad(set_to_none=True)
        return value, g


def a6_hull_fit(aligned: list[Mapping], start: list[float], model, loss: Callable, steps: int = 2,
                h: float = 0.05) -> tuple[HullPoint, list[float], dict]:
    """The point of the aligned copies' affine hull under which `model` best fits the client's own data.

    Newton steps on the m−1 hull coordinates from `start` (hull weights, e.g. A5's), the Hessian from finite
    differences of the gradient (step h in hull coordinates; exact for a quadratic loss); a step that does not
    lower the loss is halved (up to 4 times). Returns (θ̂, its weights, {loss at start, at θ̂, evaluations})."""
    if len(aligned) == 1:
        return HullPoint(aligned, [1.0]), [1.0], {}
    hm = _HullModel(aligned, model, loss)
    c = np.asarray(start[1:], dtype=float)
    value, g = hm.value_and_grad(c)
    info = {"loss_start": value, "evaluations": 1}
    for _ in range(steps):
        k = len(c)
        hess = np.zeros((k, k))
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            hess[:, i] = (hm.value_and_grad(c + e)[1] - g) / h
            info["evaluations"] += 1
        hess = (hess + hess.T) / 2
        step = -np.linalg.lstsq(hess, g, rcond=None)[0]
        if np.any(np.linalg.eigvalsh(hess) <= 0):
            step = -g / max(np.abs(np.diag(hess)).max(), 1e-12)  # not convex here: a scaled gradient step
        for _ in range(5):
            new_value, new_g = hm.value_and_grad(c + step)
            info["evaluations"] += 1
            if new_value < value:
                break
            step = step / 2
        else:
            break  # no step lowered the loss: c is the best point found
        c, value, g = c + step, new_value, new_g
        if np.abs(step).max() < 1e-4:
            break
    info["loss_fit"] = value
    weights = coef_weights(c)
    return HullPoint(aligned, weights), weights, info


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
