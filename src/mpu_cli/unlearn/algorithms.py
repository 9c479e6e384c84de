"""Every unlearning algorithm, registered: importing this module imports each algorithm module once."""
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
