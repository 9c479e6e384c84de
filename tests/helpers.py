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


# ---- a hand-made break-map sweep (report/breakmap.py; tests/test_breakmap.py, tests/test_readme_tables.py) ----

SEEDS = (0, 1, 2)
# per-seed offsets of the arm against its clean run: centred on 0 ("= clean") or all well above it
SAME, WORSE = (-0.01, 0.0, 0.01), (0.20, 0.21, 0.22)


def break_map_table(kappas=(0.1, 1.0)):
    """npo: noised matches clean at κ=0.1 and not at κ=1; mpu m=2 differs already at κ=0.1; noised α=mean
    matches at every κ."""
    import pandas as pd

    rows = []
    plan = {("noised", 2, "one"): {0.1: SAME, 1.0: WORSE}, ("mpu", 2, None): {0.1: WORSE, 1.0: WORSE},
            ("noised", 2, "mean"): {0.1: SAME, 1.0: SAME}}
    for seed in SEEDS:
        clean = 0.45 + 0.01 * seed
        rows.append({"run": f"clean_s{seed}", "algorithm": "npo", "arm": "clean", "kappa": 0.0, "m": 1,
                     "seed": seed, "server.noised_alpha": None, "forget_Q_A_Prob": clean, "deg_avg": math.nan,
                     "clean_run": ""})
        for (arm, m, alpha), by_kappa in plan.items():
            for kappa in kappas:
                value = clean + by_kappa[kappa][seed]
                rows.append({"run": f"{arm}{alpha}_k{kappa}_s{seed}", "algorithm": "npo", "arm": arm,
                             "kappa": kappa, "m": m if (arm == "mpu" or alpha != "one") else 1, "seed": seed,
                             "server.alpha_schedule": "linear" if arm == "mpu" or alpha != "one" else None,
                             "server.noised_alpha": alpha, "forget_Q_A_Prob": value,
                             "deg_avg": (value - clean) / clean, "clean_run": f"clean_s{seed}"})
    return pd.DataFrame(rows)


BREAK_KEYS = ["algorithm", "arm", "kappa", "m", "server.noised_alpha"]
