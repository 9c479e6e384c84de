"""TOFU metric math on plain numbers (open-unlearning's definitions; README: What the numbers mean).

Everything here is model-free: inputs are per-answer average losses, token log-probabilities,
argmax-correct flags or strings; outputs are Python floats. Probability ratios are computed in
log space so nothing underflows.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import hmean, ks_2samp, rankdata

MIN_K = 0.4  # min-k% attack: the lowest 40 % token log-probs

_ROUGE_SCORER = None


# ---- per-example quantities ------------------------------------------------------------------

def prob(avg_loss: float) -> float:
    """Prob = exp(-avg_loss): the per-token geometric-mean probability of the answer."""
    return float(math.exp(-avg_loss))


def truth_ratio(true_avg_loss: float, pert_avg_losses: Sequence[float]) -> float:
    """TR = exp(-mean_j avg_loss(pert_j)) / exp(-avg_loss(true)).

    `true` is the paraphrased answer (forget/retain) or the answer itself (real authors, world facts).
    """
    return float(math.exp(true_avg_loss - float(np.mean(pert_avg_losses))))


def normalised_prob(true_avg_loss: float, pert_avg_losses: Sequence[float]) -> float:
    """p(a) / (p(a) + sum_j p(pert_j)) with length-normalised p = exp(-avg_loss)."""
    # = 1 / (1 + sum_j exp(l_a - l_j)), evaluated stably
    d = true_avg_loss - np.asarray(pert_avg_losses, dtype=np.float64)
    m = max(0.0, float(d.max())) if d.size else 0.0
    denom_log = m + math.log(math.exp(-m) + float(np.exp(d - m).sum()))
    return float(math.exp(-denom_log))


def without_final_prediction(per_token: Sequence) -> np.ndarray:
    """The answer tokens the memorization metrics look at: all but the final labelled one.

    open-unlearning leaves the last prediction of an answer (the EOS / end-of-turn token) out of
    extraction_strength, exact_memorization and the min-k score (its tokenwise log-prob helpers: "-1 to
    ignore eos prediction"); we follow it so these numbers sit on its scale. Prob, truth ratio and
    normalised Prob keep the EOS token.
    """
    return np.asarray(per_token)[:-1]


def min_k_score(token_logprobs: Sequence[float], k: float = MIN_K) -> float:
    """-mean of the lowest k-fraction (at least one) of the given token log-probs.

    Higher = less likely = less of a member. No tokens gives NaN (left out of the AUC).
    """
    lp = np.sort(np.asarray(token_logprobs, dtype=np.float64))
    if lp.size == 0:
        return float("nan")
    n = max(1, int(lp.size * k))
    return float(-lp[:n].mean())


def extraction_strength(correct: Sequence[bool]) -> float:
    """ES = 1 - k/n over n tokens, k the smallest index from which every later token is predicted exactly.

    An all-correct answer gives ES = 1. When no suffix matches (only the empty one), open-unlearning's loop
    runs out at k = n - 1 and gives ES = 1/n, not 0; we match it. No tokens at all gives 0 (as it does).
    """
    c = list(map(bool, correct))
    n = len(c)
    if n == 0:
        return 0.0
    k = n
    while k > 0 and c[k - 1]:
        k -= 1
    return 1.0 - min(k, n - 1) / n


def exact_memorization(correct: Sequence[bool]) -> float:
    """Fraction of the given tokens whose teacher-forced argmax equals the label; NaN without tokens."""
    c = np.asarray(correct, dtype=bool)
    return float(c.mean()) if c.size else float("nan")


def rouge_scores(ground_truth: str, generation: str) -> dict[str, float]:
    """rouge1 recall, rougeL F1 and rougeL recall as open-unlearning records them (stemmed)."""
    global _ROUGE_SCORER
    if _ROUGE_SCORER is None:
        import logging

        from rouge_score import rouge_scorer

        logging.getLogger("absl").setLevel(logging.WARNING)
        _ROUGE_SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    s = _ROUGE_SCORER.score(ground_truth, generation)
    return {
        "rouge1_recall": float(s["rouge1"].recall),
        "rougeL_f1": float(s["rougeL"].fmeasure),
        "rougeL_recall": float(s["rougeL"].recall),
    }


def rougeL_recall(ground_truth: str, generation: str) -> float:
    return rouge_scores(ground_truth, generation)["rougeL_recall"]


# ---- aggregations ------------------------------------------------------------------------------

def mean(values: Sequence[float]) -> float:
    return float(np.mean(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (open-unlearning drops items it scored None)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def tr_closer_to_1(trs: Sequence[float]) -> float:
    """forget_truth_ratio: mean of min(TR, 1/TR)."""
    t = np.asarray(trs, dtype=np.float64)
    return float(np.mean(np.minimum(t, 1.0 / t)))


def tr_true_better(trs: Sequence[float]) -> float:
    """retain/ra/wf Truth_Ratio: mean of max(0, 1 - TR)."""
    t = np.asarray(trs, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - t)))


def forget_quality(model_trs: Sequence[float], reference_trs: Sequence[float]) -> float:
    """p-value of the two-sample KS test between the model's and the retain model's forget TRs."""
    return float(ks_2samp(np.asarray(model_trs, float), np.asarray(reference_trs, float)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the utility metrics; 0 when any of them is 0."""
    v = np.asarray(values, dtype=np.float64)
    if np.any(v <= 0):
        return 0.0
    return float(hmean(v))


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve, positives = label 1, ties counted 0.5 (sklearn's roc_auc_score)."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    n1 = int((y == 1).sum())
    n0 = int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError(f"roc_auc needs both classes (got {n1} positives, {n0} negatives)")
    ranks = rankdata(s)  # average ranks for ties -> ties count 0.5
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """AUC of the membership attack with forget = 0, holdout = 1 (1 = forget far more likely than holdout)."""
    f = [s for s in forget_scores if not math.isnan(s)]
    h = [s for s in holdout_scores if not math.isnan(s)]
    return roc_auc([0] * len(f) + [1] * len(h), f + h)


def privleak(auc: float, auc_retain: float = 0.5) -> float:
    """((1-AUC) - (1-AUC_retain)) / (1-AUC_retain) * 100 (MUSE convention, as open-unlearning)."""
    score, ref = 1.0 - auc, 1.0 - auc_retain
    return float((score - ref) / (ref + 1e-10) * 100.0)
