"""The MPU server (Pre-Process, Post-Process, the baselines' arms). Works on plain state dicts; never imports the client or the data.

The names below load their module (and torch) when first used, so `mpu_cli.mpu.arms` and `mpu_cli.mpu.settings` stay light to import.
"""

from importlib import import_module

_EXPORTS = {
    "MPUServer": "mpu_cli.mpu.server",
    "ModelLayout": "mpu_cli.mpu.layout",
    "ServerConfig": "mpu_cli.mpu.settings",
    "Transform": "mpu_cli.mpu.reparam",
    "UpdateAccumulator": "mpu_cli.mpu.aggregate",
    "ZeroSumNoise": "mpu_cli.mpu.noise",
    "aggregate_adapters": "mpu_cli.mpu.lora_aggregate",
    "alpha_schedule": "mpu_cli.mpu.noise",
    "apply_transform": "mpu_cli.mpu.reparam",
    "block_of": "mpu_cli.models.family",
    "block_sigmas": "mpu_cli.mpu.noise",
    "harmonic_weights": "mpu_cli.mpu.aggregate",
    "identity_transform": "mpu_cli.mpu.reparam",
    "invert_lora": "mpu_cli.mpu.reparam",
    "invert_transform": "mpu_cli.mpu.reparam",
    "sample_transform": "mpu_cli.mpu.reparam",
    "unprotected_sigma": "mpu_cli.mpu.noise",
    "zero_sum_noise": "mpu_cli.mpu.noise",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
