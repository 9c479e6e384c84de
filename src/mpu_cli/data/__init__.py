"""TOFU data: the embedded TOFU-like data set, local TOFU folders and Hub datasets (see ``tofu``)."""

from mpu_cli.data.tofu import (
    EMBEDDED,
    FORGET_SPLITS,
    TOFU_CONFIGS,
    embedded_dir,
    load_idk,
    load_public_text,
    load_split,
    split_names,
)

__all__ = [
    "EMBEDDED",
    "FORGET_SPLITS",
    "TOFU_CONFIGS",
    "embedded_dir",
    "load_idk",
    "load_public_text",
    "load_split",
    "split_names",
]
