"""SimNPO: -(2/beta) * mean_i log sigmoid(beta * (NLL_sum(y_i)/|y_i| - delta)) + alpha * L_retain. No reference."""
import torch.nn.functional as F

from mpu_cli.logprobs import sequence_nll
from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, logits_of
from mpu_cli.unlearn.registry import register


@register("simnpo")
class SimNPO(UnlearningAlgorithm, RetainTerm):
    def __init__(self, beta: float = 4.5, delta: float = 0.0, gamma: float = 0.125, alpha: float = 1.0,
                 retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.beta, self.delta = beta, delta
        self.init_weights(gamma, alpha)

    def loss(self, model, forget, retain, ref):
        nll, n_tokens = sequence_nll(logits_of(model, forget), forget["labels"])
        length_normed = nll / n_tokens.clamp(min=1) - self.delta
        forget_loss = -(2.0 / self.beta) * F.logsigmoid(self.beta * length_normed).mean()
        return self.combine(forget_loss, model, retain, ref)
