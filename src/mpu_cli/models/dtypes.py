"""The dtypes a model may be loaded and published in (`model.dtype`), by name; standard library only, so that
the config schema and the server party can both name them."""
from __future__ import annotations

from enum import StrEnum


class Dtype(StrEnum):
    """A model's dtype (server arithmetic is fp32 whatever this is)."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
