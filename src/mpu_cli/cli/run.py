"""`mpu-run`: `mpu-run algorithm=npo kappa=0.01 m=2`, `mpu-run -m …` sweeps (a Hydra app, cli/run_app.py).

The first steps need nothing but the standard library, so that they happen at once, before Hydra, torch and
the configs are loaded: SIGINT / SIGTERM are handled (one line, exit 130 / 143), a NaN or infinite number typed on
the command line is refused, and a run directory the command line names outright (hydra.run.dir= or run_id=) is
claimed — locked and marked before anything else is written; a busy one is refused (exit 2).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "config.yaml"  # (config.py is not imported yet)


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
    from mpu_cli.run import runlock, signals

    signals.install()
    try:
        _main()
    except signals.Interrupted as e:  # before the run started (a started run says so itself, with the resume hint)
        runlock.release_unused()
        print(f"mpu-run: error: interrupted ({e.name}) while starting; nothing was written", file=sys.stderr)
        sys.exit(e.code)


def _main() -> None:
    from mpu_cli.cli.aliases import AliasError, rewrite
    from mpu_cli.run import runlock

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
    named = runlock.named_dir(argv, ROOT_CONFIG)
    if named is not None:
        try:
            runlock.claim(named)  # the composed configuration confirms it (run/rundir.precheck)
        except runlock.RunDirError as e:
            print(f"mpu-run: error: {e}", file=sys.stderr)
            sys.exit(2)
    sys.argv[1:] = argv  # Hydra reads sys.argv itself
    from mpu_cli.cli.run_app import start

    start(argv)
