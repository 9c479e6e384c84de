"""The MPU server (Pre-Process, Post-Process, the baselines' arms). Works on plain state dicts; never imports the client or the data."""

from mpu_cli.models.family import block_of

from .aggregate import UpdateAccumulator, harmonic_weights
from .layout import ModelLayout
from .noise import ZeroSumNoise, alpha_schedule, block_sigmas, unprotected_sigma, zero_sum_noise
from .reparam import (
    Transform,
    apply_transform,
    identity_transform,
    invert_lora,
    invert_transform,
    sample_transform,
)
from .server import MPUServer, ServerConfig

__all__ = [
    "MPUServer",
    "ModelLayout",
    "ServerConfig",
    "Transform",
    "UpdateAccumulator",
    "ZeroSumNoise",
    "alpha_schedule",
    "apply_transform",
    "block_of",
    "block_sigmas",
    "harmonic_weights",
    "identity_transform",
    "invert_lora",
    "invert_transform",
    "sample_transform",
    "unprotected_sigma",
    "zero_sum_noise",
]
