"""The client: unlearning algorithms behind one registry, and the loop that runs one on a published copy.

Importing this package registers every algorithm module listed below.
"""
from mpu_cli.unlearn import (  # noqa: F401  (registration side effect)
    ga,
    graddiff,
    idkdpo,
    npo,
    rmu,
    satimp,
    simnpo,
    undial,
    wga,
)
from mpu_cli.unlearn.registry import ALGORITHMS, build_algorithm

__all__ = ["ALGORITHMS", "build_algorithm"]
