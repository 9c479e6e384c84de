"""The server built from the prepared models, one way for the in-process runner, mpu-server, the audit and the GPU
check: θ_0 is the target's weights, the noise scales are measured from the public base."""
from __future__ import annotations

from .layout import ModelLayout
from .server import MPUServer
from .settings import ServerConfig


def build_server(target, settings: ServerConfig, base: dict | None = None) -> MPUServer:
    """The server of a loaded target model (its weights are θ_0; the model itself is left as it is); base: the
    public base as an fp32 state dict, or None."""
    return MPUServer(_theta_of(target), ModelLayout.from_hf_config(target.config), settings, base=base)


def load_server(target: str, base: str | None, dtype, settings: ServerConfig) -> MPUServer:
    """The server of the prepared models' folders, loaded in `dtype`; the target is dropped before the base is
    loaded (peak memory: one model besides θ)."""
    from mpu_cli.models.io import load_model

    model = load_model(target, dtype)
    theta, layout = _theta_of(model), ModelLayout.from_hf_config(model.config)
    del model
    return MPUServer(theta, layout, settings, base=load_base(base, dtype))


def load_base(path: str | None, dtype) -> dict | None:
    """The public base as the server reads it: an fp32 state dict on the host (None: no base)."""
    from mpu_cli.models.io import load_model, state_dict_fp32

    return state_dict_fp32(load_model(path, dtype)) if path else None


def _theta_of(model) -> dict:
    """The model's tensors, each copied to the host in its own dtype (the dtype each is published in)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
