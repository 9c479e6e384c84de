"""Per-token log-probabilities of answer tokens, shared by the client losses and the evaluator."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mpu_cli.data.formatting import IGNORE


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1."""
    return logits[:, :-1, :], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label_t | prefix) for every shifted position, and the mask of answer tokens.

    Returns (logp [B, T-1] with 0 where masked, mask [B, T-1] bool). Computed in fp32.
    """
    logits, labels = shift(logits, labels)
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of -log p over answer tokens, number of answer tokens), one value per sequence."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(-1), mask.sum(-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL_mean: mean cross-entropy over all answer tokens of the batch (HF causal-LM loss)."""
    logits, labels = shift(logits, labels)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)
