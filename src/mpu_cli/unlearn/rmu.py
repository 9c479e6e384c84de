"""RMU (representation misdirection): push the hidden states after decoder block `layer` on forget answer
tokens towards c * u (u a fixed random unit vector), and keep them on retain answer tokens equal to the
reference's (retain_loss_type=EMBED_DIFF; NLL and KL as in the other methods).

Only `trainable_params_regex` is updated (default: mlp.down_proj.weight of blocks layer-2 .. layer, as
open-unlearning's layers 5, 6, 7 of 16). `layer: null` puts the block at the relative depth of block 7 of
Llama-3.2-1B's 16: floor(7/16 * num_layers + 0.5) (2 of 4 for the embedded model).

Distances: per token the mean over hidden units of the squared difference, averaged over the answer
tokens of each sequence, then over the batch (open-unlearning's reduction). u is drawn uniform on [0, 1)^H
and normalised (as in the RMU paper), from `seed`: the same u in every round and every copy.
"""
import re

import torch

from mpu_cli.models.family import family_of
from mpu_cli.unlearn.base import (
    RetainTerm,
    UnlearningAlgorithm,
    block_output,
    decoder_layers,
    masked_token_mse,
    params_matching,
    scaled_layer,
)
from mpu_cli.unlearn.registry import register

RETAIN_TYPES = ("EMBED_DIFF", "NLL", "KL")


@register("rmu")
class RMU(UnlearningAlgorithm, RetainTerm):
    def __init__(self, layer: int | None = None, steering_coeff: float = 2.0, gamma: float = 1.0,
                 alpha: float = 1.0, retain_loss_type: str = "EMBED_DIFF", trainable_params_regex: str | None = None,
                 seed: int = 0):
        if retain_loss_type not in RETAIN_TYPES:
            raise ValueError(f"retain_loss_type={retain_loss_type!r} is not one of {sorted(RETAIN_TYPES)}")
        RetainTerm.__init__(self, "NLL" if retain_loss_type == "EMBED_DIFF" else retain_loss_type)
        self.embed_diff = retain_loss_type == "EMBED_DIFF"
        self.layer_arg, self.steering_coeff = layer, steering_coeff
        self.init_weights(gamma, alpha, reference=self.embed_diff and alpha != 0)
        self.trainable_params_regex, self.seed = trainable_params_regex, seed
        self._u: dict[int, torch.Tensor] = {}

    def layer(self, model) -> int:
        _, layers = decoder_layers(model)
        return scaled_layer(len(layers)) if self.layer_arg is None else int(self.layer_arg)

    def trainable_parameters(self, model) -> list[str]:
        pattern = self.trainable_params_regex
        if pattern is None:
            family, L = family_of(model.config.model_type), self.layer(model)
            pattern = "|".join(re.escape(family.mlp_output_weight(i)) for i in range(max(0, L - 2), L + 1))
        names = params_matching(model, pattern)
        if not names:
            raise ValueError(f"rmu: trainable_params_regex={pattern!r} matches no parameter of this model")
        return names

    def unit_vector(self, hidden_size: int) -> torch.Tensor:
        if hidden_size not in self._u:
            g = torch.Generator().manual_seed(self.seed)
            u = torch.rand(hidden_size, generator=g)
            self._u[hidden_size] = u / u.norm()
        return self._u[hidden_size]

    def loss(self, model, forget, retain, ref):
        L = self.layer(model)
        h = block_output(model, forget, L)
        target = (self.steering_coeff * self.unit_vector(h.shape[-1])).to(h.device)
        forget_loss = masked_token_mse(h, target.expand_as(h), forget["labels"] != -100)
        return self.combine(forget_loss, model, retain, ref)

    def retain_loss(self, model, retain, ref):
        if not self.embed_diff:
            return RetainTerm.retain_loss(self, model, retain, ref)
        L = self.layer(model)
        with torch.no_grad():
            h_ref = block_output(ref, retain, L)
        return masked_token_mse(block_output(model, retain, L), h_ref, retain["labels"] != -100)
