"""WGA (weighted gradient ascent): -mean over answer tokens of (p_t^beta, detached) * (-log p_t)
+ alpha * L_retain."""
from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, answer_token_logprobs
from mpu_cli.unlearn.registry import register


@register("wga")
class WGA(UnlearningAlgorithm, RetainTerm):
    def __init__(self, beta: float = 1.0, gamma: float = 1.0, alpha: float = 1.0, retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.beta = beta
        self.init_weights(gamma, alpha)

    def loss(self, model, forget, retain, ref):
        logp = answer_token_logprobs(model, forget)
        weight = logp.detach().exp() ** self.beta
        forget_loss = -(weight * -logp).mean()
        return self.combine(forget_loss, model, retain, ref)
