"""SatImp: -mean over answer tokens of (p_t^beta1 * (1 - p_t)^beta2, detached) * (-log p_t)
+ alpha * L_retain. beta1 weights saturation, beta2 importance (as in the method's own paper)."""
from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, answer_token_logprobs
from mpu_cli.unlearn.registry import register


@register("satimp")
class SatImp(UnlearningAlgorithm, RetainTerm):
    def __init__(self, beta1: float = 5.0, beta2: float = 1.0, gamma: float = 1.0, alpha: float = 0.1,
                 retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.beta1, self.beta2 = beta1, beta2
        self.init_weights(gamma, alpha)

    def loss(self, model, forget, retain, ref):
        logp = answer_token_logprobs(model, forget)
        p = logp.detach().exp()
        weight = p ** self.beta1 * (1 - p) ** self.beta2
        forget_loss = -(weight * -logp).mean()
        return self.combine(forget_loss, model, retain, ref)
