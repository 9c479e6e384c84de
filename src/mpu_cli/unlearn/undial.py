"""UNDIAL: self-distillation to adjusted logits.

Soft targets = softmax(reference logits with the true next token's logit reduced by beta); the loss is the
model's cross-entropy to them, averaged over the answer tokens of the batch (prompt and pad excluded),
plus alpha * L_retain (alpha = 0 by default: then no retain data is used at all).
"""
import torch

from mpu_cli.logprobs import shift
from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, logits_of
from mpu_cli.unlearn.registry import register


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    logits, shifted = shift(logits, labels)
    ref_logits, _ = shift(ref_logits, labels)
    mask = shifted != -100
    logits, ref_logits, targets = logits[mask].float(), ref_logits[mask].float(), shifted[mask]  # [N, V], [N]
    adjusted = ref_logits.clone()
    adjusted[torch.arange(len(targets)), targets] -= beta
    soft = torch.softmax(adjusted, -1)
    return -(soft * torch.log_softmax(logits, -1)).sum(-1).mean()


@register("undial")
class UNDIAL(UnlearningAlgorithm, RetainTerm):
    def __init__(self, beta: float = 10.0, gamma: float = 1.0, alpha: float = 0.0, retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.beta = beta
        self.init_weights(gamma, alpha, reference=True)

    def loss(self, model, forget, retain, ref):
        with torch.no_grad():
            ref_logits = logits_of(ref, forget)
        forget_loss = undial_loss(logits_of(model, forget), ref_logits, forget["labels"], self.beta)
        return self.combine(forget_loss, model, retain, ref)
