"""NPO: (2/beta) * mean softplus(beta * (NLL_sum_ref - NLL_sum_theta)) + alpha * L_retain."""
import torch
import torch.nn.functional as F

from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, nll_sum
from mpu_cli.unlearn.registry import register


@register("npo")
class NPO(UnlearningAlgorithm, RetainTerm):
    needs_reference = True
    uses_retain = True

    def __init__(self, beta: float = 0.1, gamma: float = 1.0, alpha: float = 1.0, retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.beta, self.gamma, self.alpha = beta, gamma, alpha

    def loss(self, model, forget, retain, ref):
        with torch.no_grad():
            ref_nll = nll_sum(ref, forget)
        forget_loss = (2.0 / self.beta) * F.softplus(self.beta * (ref_nll - nll_sum(model, forget))).mean()
        return self.gamma * forget_loss + self.alpha * self.retain_loss(model, retain, ref)
