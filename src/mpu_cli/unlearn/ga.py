"""GradAscent: maximise the forget-set NLL."""
from mpu_cli.logprobs import mean_nll
from mpu_cli.unlearn.base import UnlearningAlgorithm, logits_of
from mpu_cli.unlearn.registry import register


@register("ga")
class GradAscent(UnlearningAlgorithm):
    def loss(self, model, forget, retain, ref):
        return -mean_nll(logits_of(model, forget), forget["labels"])
