"""GradDiff: gamma * (-NLL on forget) + alpha * L_retain."""
from mpu_cli.logprobs import mean_nll
from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, logits_of
from mpu_cli.unlearn.registry import register


@register("graddiff")
class GradDiff(UnlearningAlgorithm, RetainTerm):
    uses_retain = True

    def __init__(self, gamma: float = 1.0, alpha: float = 1.0, retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.gamma, self.alpha = gamma, alpha
        self.needs_reference = self.retain_needs_reference

    def loss(self, model, forget, retain, ref):
        forget_loss = -mean_nll(logits_of(model, forget), forget["labels"])
        return self.gamma * forget_loss + self.alpha * self.retain_loss(model, retain, ref)
