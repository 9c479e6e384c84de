"""Privacy audit: what a curious client or server can learn from what it legitimately sees.

attacks.py / align.py: the attacks, given only the attacker's view (no θ, seeds, α, σ or T_k).
score.py: the ground-truth scorer, the only module given θ and the server's secrets.
run.py / cli.py: `mpu-audit`, wiring a server, the attacks and the scorer.
"""
from .attacks import ClientEstimates, ClientView, auc, b1_rank_forget_items, client_attacks
from .score import Scorer, score_client_attacks

__all__ = ["ClientEstimates", "ClientView", "Scorer", "auc", "b1_rank_forget_items", "client_attacks",
           "score_client_attacks"]
