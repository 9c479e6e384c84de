"""`mpu-run`: `mpu-run algorithm=npo kappa=0.01 m=2`, `mpu-run -m …` sweeps (a Hydra app, cli/run_app.py).

The first check needs nothing but the standard library, so that a NaN or infinite number typed on the command
line is refused at once, before Hydra, torch and the configs are loaded.
"""
from __future__ import annotations

import math
import sys


def non_finite_override(argv: list[str]) -> str | None:
    """The first `key=value` whose value (or one of its comma-separated sweep values) is a non-finite number,
    as "key=value"; None when there is none."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        for token in value.split(","):
            token = token.strip().strip("'\"")
            try:
                number = float(token)
            except ValueError:
                continue
            if not math.isfinite(number):
                return f"{key.lstrip('+~')}={number}"
    return None


def run_main() -> None:
    from mpu_cli.cli.aliases import AliasError, rewrite

    bad = non_finite_override(sys.argv[1:])
    if bad:
        print(f"mpu-run: error: {bad} is not a finite number; accepted: a finite number", file=sys.stderr)
        sys.exit(2)
    try:
        argv, notes = rewrite(sys.argv[1:])
    except AliasError as e:
        print(f"mpu-run: error: {e}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(note, file=sys.stderr)
    sys.argv[1:] = argv  # Hydra reads sys.argv itself
    from mpu_cli.cli.run_app import start

    start(argv)
