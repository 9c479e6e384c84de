"""A LoRA client (client.lora): the copy is unlearned through a fresh peft adapter and only the adapter's factors
go back. The frozen reference of NPO-style losses is the same model with the adapter disabled (peft's
disable_adapter), which is the copy as received: no second model in memory.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from mpu_cli.models.family import split_block
from mpu_cli.models.lora import config_json, peft_config


@contextmanager
def lora_adapter(model, settings, seed: int, trained: list[str] | None = None):
    """`model` wrapped in a fresh adapter (peft's PeftModel; the base weights frozen), removed again on exit so
    that the client's model object is reused unchanged. The factors' initialisation is seeded with `seed`.
    trained: the parameter names a method updates (RMU's); the adapter then goes on exactly those weights."""
    from peft import get_peft_model

    targets = None
    if trained is not None:
        not_weights = [n for n in trained if not n.endswith(".weight")]
        if not_weights:
            raise ValueError(f"client.lora: the method trains {not_weights[0]!r}, which is not a weight matrix")
        targets = [n.removesuffix(".weight") for n in trained]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, peft_config(settings, targets))
    try:
        outside = [n for n, _ in peft_model.named_parameters() if "lora_" in n and split_block(n) is None]
        if outside:
            raise ValueError(f"client.lora.target_modules: {outside[0]!r} is outside every transformer block; "
                             "accepted: the blocks' projections (q_proj k_proj v_proj o_proj gate_proj up_proj "
                             "down_proj)")
        yield peft_model
    finally:
        peft_model.unload()  # the original modules back, base weights untouched


class Adapter(dict):
    """A trained adapter as peft saves it: its factors under peft's own names (adapter_model.safetensors), CPU
    copies, and `config`, the content of its adapter_config.json."""

    def __init__(self, peft_model):
        from peft import get_peft_model_state_dict

        super().__init__({n: t.detach().to("cpu", copy=True).contiguous()
                          for n, t in get_peft_model_state_dict(peft_model).items()})
        self.config = config_json(peft_model.peft_config["default"])


class AdapterDisabled:
    """The reference model of a LoRA client: the model with its adapter disabled, in eval mode, without
    gradients. Called like a model; other attributes (config, modules) are the model's."""

    def __init__(self, peft_model):
        self._model = peft_model

    def __call__(self, *args, **kwargs):
        model, training = self._model, self._model.training
        model.eval()  # as the frozen snapshot of a full client: no dropout in the reference
        try:
            with model.disable_adapter(), torch.no_grad():
                return model(*args, **kwargs)
        finally:
            model.train(training)

    def __getattr__(self, name):
        return getattr(self._model, name)
