"""TOFU-style evaluation: metrics (pure math), batched model passes, and the TOFU_EVAL assembly."""
from mpu_cli.evals.tofu import (
    ALL_METRICS,
    QUICK_METRICS,
    UTILITY_METRICS,
    EvalConfig,
    evaluate,
    load_retain_reference,
    summarize,
    write_eval,
)

__all__ = [
    "ALL_METRICS",
    "QUICK_METRICS",
    "UTILITY_METRICS",
    "EvalConfig",
    "evaluate",
    "load_retain_reference",
    "summarize",
    "write_eval",
]
