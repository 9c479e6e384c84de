"""IdkDPO: DPO with a refusal answer as the preferred answer and the true answer as the rejected one.

-(2/beta) * mean log sigmoid(beta * [(log pi_theta - log pi_ref)(y_idk) - (log pi_theta - log pi_ref)(y)])
+ alpha * L_retain, with summed answer log-probs. The forget batch carries `forget["idk"]` (same questions,
refusal answers), collated by the client loop because `needs_idk` is set.
"""
import torch
import torch.nn.functional as F

from mpu_cli.unlearn.base import RetainTerm, UnlearningAlgorithm, nll_sum
from mpu_cli.unlearn.registry import register


@register("idkdpo")
class IdkDPO(UnlearningAlgorithm, RetainTerm):
    needs_idk = True

    def __init__(self, beta: float = 0.1, gamma: float = 1.0, alpha: float = 1.0, retain_loss_type: str = "NLL"):
        RetainTerm.__init__(self, retain_loss_type)
        self.beta = beta
        self.init_weights(gamma, alpha, reference=True)

    def loss(self, model, forget, retain, ref):
        if "idk" not in forget:
            raise ValueError("idkdpo: the forget batch has no 'idk' answers (encode_client_data adds them)")
        win, lose = forget["idk"], forget
        with torch.no_grad():
            win_ref, lose_ref = nll_sum(ref, win), nll_sum(ref, lose)
        win_log_ratio = -(nll_sum(model, win) - win_ref)
        lose_log_ratio = -(nll_sum(model, lose) - lose_ref)
        forget_loss = -(2.0 / self.beta) * F.logsigmoid(self.beta * (win_log_ratio - lose_log_ratio)).mean()
        return self.combine(forget_loss, model, retain, ref)
