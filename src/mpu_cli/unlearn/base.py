"""What every unlearning algorithm shares: forward passes over answer tokens and the retain losses."""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from mpu_cli.logprobs import mean_nll, sequence_nll, shift, token_logprobs


def logits_of(model, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def nll_sum(model, batch: dict) -> torch.Tensor:
    """NLL_sum(y): per-sequence sum of -log p over answer tokens."""
    return sequence_nll(logits_of(model, batch), batch["labels"])[0]


def answer_token_logprobs(model, batch: dict) -> torch.Tensor:
    """log p_t of every answer token of the batch, flattened to [N] (fp32; prompt and pad positions dropped)."""
    logp, mask = token_logprobs(logits_of(model, batch), batch["labels"])
    return logp[mask]


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
    (when needs_reference) a frozen reference model; it never sees the server's state.

    Hooks read by the client loop (client.py):
    - needs_reference: build a frozen reference model (no gradient) for `loss`'s `ref`.
    - uses_retain: pair every forget item with a random retain item (`retain` batch).
    - needs_idk: the forget batch carries `forget["idk"]`, a collated batch of the same questions, each
      with a refusal answer (encode_client_data draws one per forget item, seeded).
    - trainable_parameters(model): names of the parameters the method updates (None: all of them);
      the client turns requires_grad off for the others during the call and restores it afterwards.
    """

    name = "base"
    needs_reference = False
    uses_retain = False
    needs_idk = False

    def trainable_parameters(self, model) -> list[str] | None:
        return None

    def loss(self, model, forget: dict, retain: dict | None, ref) -> torch.Tensor:
        # abstract: every registered algorithm defines its own loss (tests/test_algorithms_all.py checks each)
        raise NotImplementedError(f"algorithm {self.name!r} does not define loss()")


class RetainTerm:
    """L_retain: NLL on the retain batch, or KL to the reference (one reference forward)."""

    def __init__(self, retain_loss_type: str = "NLL"):
        if retain_loss_type not in ("NLL", "KL"):
            raise ValueError(f"retain_loss_type={retain_loss_type!r} is not one of ['KL', 'NLL']")
        self.retain_loss_type = retain_loss_type

    @property
    def retain_needs_reference(self) -> bool:
        return self.retain_loss_type == "KL"

    def init_weights(self, gamma: float, alpha: float, reference: bool = False) -> None:
        """gamma, alpha; alpha = 0 drops the retain term, and with it the retain data (uses_retain) and
        the reference model a KL retain term would need (needs_reference, unless `reference`)."""
        self.gamma, self.alpha = gamma, alpha
        self.uses_retain = alpha != 0
        self.needs_reference = reference or (self.uses_retain and self.retain_needs_reference)

    def combine(self, forget_loss: torch.Tensor, model, retain: dict | None, ref) -> torch.Tensor:
        """gamma * L_forget + alpha * L_retain."""
        if not self.uses_retain:
            return self.gamma * forget_loss
        return self.gamma * forget_loss + self.alpha * self.retain_loss(model, retain, ref)

    def retain_loss(self, model, retain: dict, ref) -> torch.Tensor:
        logits = logits_of(model, retain)
        if self.retain_loss_type == "NLL":
            return mean_nll(logits, retain["labels"])
        with torch.no_grad():
            ref_logits = logits_of(ref, retain)
        return kl_to_reference(logits, ref_logits, retain["labels"])


# --- hidden states of one decoder block (RMU) ---------------------------------------------------------


def decoder_layers(model) -> tuple[str, nn.ModuleList]:
    """(dotted name, module list) of the model's decoder blocks, e.g. ("model.layers", ...) for Llama."""
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (n_layers is None or len(module) == n_layers):
            return name, module
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} (no nn.ModuleList of layers)")


def scaled_layer(num_layers: int, of_layer: int = 7, of_depth: int = 16) -> int:
    """Block index at the same relative depth as block `of_layer` of a `of_depth`-block model (half rounds up)."""
    return min(num_layers - 1, max(0, math.floor(of_layer / of_depth * num_layers + 0.5)))


class _StopForward(Exception):
    pass


def block_output(model, batch: dict, layer: int) -> torch.Tensor:
    """Hidden states after decoder block `layer` (0-based; = output_hidden_states[layer + 1] before the final
    norm), [B, T, H]. The forward stops right after that block: later blocks and the LM head are not run."""
    _, layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer={layer} is not a block index of this model (0..{len(layers) - 1})")
    captured = {}

    def hook(_module, _inputs, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    handle = layers[layer].register_forward_hook(hook)
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured["h"]


def masked_token_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per token: mean over hidden units of (hidden - target)^2; per sequence: mean over masked tokens;
    then mean over sequences (sequences without a masked token count as 0)."""
    sq = (hidden.float() - target.float()).pow(2).mean(-1) * mask
    return (sq.sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def params_matching(model, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [n for n, _ in model.named_parameters() if rx.fullmatch(n)]
