"""Small real models for tests: a bigram LM whose next-token logits are a learnable table."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn


class BigramLM(nn.Module):
    """logits[t] = table[input_ids[t]]: every next-token distribution is known and differentiable."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def hand_logp(table: torch.Tensor, prev: int, nxt: int) -> float:
    row = table[prev].tolist()
    return row[nxt] - math.log(sum(math.exp(x) for x in row))


def answer_pairs(ids: list[int], labels: list[int]) -> list[tuple[int, int]]:
    """(previous token, answer token) for every answer position."""
    return [(ids[t - 1], labels[t]) for t in range(1, len(ids)) if labels[t] != -100]
