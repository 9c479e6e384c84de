"""The server built from the prepared models, one way for the in-process runner, mpu-server, the audit and the GPU
check: θ_0 is the target's weights, the noise scales are measured from the public base."""
from __future__ import annotations

import torch

from .layout import ModelLayout
from .server import MPUServer
from .settings import ServerConfig


def build_server(target, settings: ServerConfig, base: dict | None = None) -> MPUServer:
    """The server of a loaded target model (its weights are θ_0; the model itself is left as it is); base: the
    public base as an fp32 state dict, or None."""
    return MPUServer(_theta_of(target), ModelLayout.from_hf_config(target.config), settings, base=base)


def load_server(target: str, base: str | None, dtype, settings: ServerConfig) -> MPUServer:
    """The server of the prepared models' folders in `dtype`, streaming: θ and the base are read from their
    safetensors files one tensor at a time when used (models/files.py; a model without them is loaded whole)."""
    from transformers import AutoConfig

    from mpu_cli.models.files import open_model
    from mpu_cli.models.io import local_model_path

    layout = ModelLayout.from_hf_config(AutoConfig.from_pretrained(local_model_path(target)))
    return MPUServer(open_model(target, dtype), layout, settings, base=load_base(base, dtype))


def load_base(path: str | None, dtype):
    """The public base as the server reads it: fp32 tensors on the host, read lazily where the model has
    safetensors files (None: no base)."""
    from mpu_cli.models.files import TensorFiles, open_model

    if not path:
        return None
    base = open_model(path, dtype)
    return base.then(torch.float32) if isinstance(base, TensorFiles) else {
        n: t.to(torch.float32) for n, t in base.items()}


def _theta_of(model) -> dict:
    """The model's tensors, each copied to the host in its own dtype (the dtype each is published in)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
