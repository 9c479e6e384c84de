"""What every unlearning algorithm shares: forward passes over answer tokens and the retain losses."""
from __future__ import annotations

import torch

from mpu_cli.logprobs import mean_nll, sequence_nll, shift


def logits_of(model, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def nll_sum(model, batch: dict) -> torch.Tensor:
    """NLL_sum(y): per-sequence sum of -log p over answer tokens."""
    return sequence_nll(logits_of(model, batch), batch["labels"])[0]


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of KL(p_ref || p_theta) of the next-token distributions."""
    logits, shifted = shift(logits, labels)
    ref_logits, _ = shift(ref_logits, labels)
    mask = shifted != -100
    logp = torch.log_softmax(logits.float(), -1)[mask]
    ref_logp = torch.log_softmax(ref_logits.float(), -1)[mask]
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()


class UnlearningAlgorithm:
    """Base class. `loss` sees the model being unlearned, a forget batch, a paired retain batch and
    (when needs_reference) a frozen reference model; it never sees the server's state."""

    name = "base"
    needs_reference = False
    uses_retain = False

    def loss(self, model, forget: dict, retain: dict | None, ref) -> torch.Tensor:
        raise NotImplementedError


class RetainTerm:
    """L_retain: NLL on the retain batch, or KL to the reference (one reference forward)."""

    def __init__(self, retain_loss_type: str = "NLL"):
        if retain_loss_type not in ("NLL", "KL"):
            raise ValueError(f"retain_loss_type={retain_loss_type!r} is not one of ['KL', 'NLL']")
        self.retain_loss_type = retain_loss_type

    @property
    def retain_needs_reference(self) -> bool:
        return self.retain_loss_type == "KL"

    def retain_loss(self, model, retain: dict, ref) -> torch.Tensor:
        logits = logits_of(model, retain)
        if self.retain_loss_type == "NLL":
            return mean_nll(logits, retain["labels"])
        with torch.no_grad():
            ref_logits = logits_of(ref, retain)
        return kl_to_reference(logits, ref_logits, retain["labels"])
