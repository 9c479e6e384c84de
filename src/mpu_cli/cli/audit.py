"""mpu-audit: what a curious client (A0–A5) and a curious server (B1) can learn in one MPU round.

The server is built from the prepared target and base of the configuration and publishes one round; from the
client's view only (the copies, the public base, the architecture) the audit mounts A0 (tensors published
exactly), A1 (one copy taken as θ), A2 (each copy aligned to θ_base), A3 (copies aligned to copy 1), A4 (the
aligned copies averaged), A5 (the point of their affine hull closest to θ_base), A6 (the hull point under which
the model best fits the client's own forget set); after one real round of unlearning, from the server's view,
B1 (forget items ranked by their loss increase). The server's secrets are used only to score. The copies are
written to files and read one tensor at a time; each phase's time and peak memory are reported. Writes
privacy_report.json / privacy_report.md, or for a sweep one folder per cell plus privacy_sweep.{json,csv,md}.

    mpu-audit kappa=0.1 m=2 seed=0 [model=tiny] [out=DIR] [b1=false] [any mpu-run override]
    mpu-audit sweep=true seed=0 [sweep_kappa=0.01,0.1] [sweep_m=2,4] [sweep_perturb=false,true] [out=DIR]
    mpu-audit sweep=true config=reproduce_smollm2 cells="kappa=0.1,m=2;kappa=0.1,m=4" seed=0

Keys (key=value):
  out=DIR               the output folder (default: outputs/audit/<time>_<cell> or <time>_sweep); never
                        overwritten
  config=NAME           the configuration composed (default: config, mpu-run's; e.g. reproduce_smollm2)
  b1=true|false         also run one unlearning round and the server-side attack B1 (default: true)
  fit=true|false        also mount A6, the client's forget-set fit over the hull (default: true)
  sweep=true|false      audit every cell of sweep_kappa x sweep_m x sweep_perturb (default: false)
  sweep_kappa=K1,K2     the sweep's noise levels (default: 0.01,0.1)
  sweep_m=M1,M2         the sweep's numbers of copies (default: 2,4)
  sweep_perturb=...     the sweep's server.perturb_unprotected values (default: false,true)
  cells=C1;C2           instead of the product above, the sweep's cells, each a comma-separated list of
                        overrides (e.g. "kappa=0.1,m=4;kappa=0.1,server.alpha_schedule=random"); a cell's own
                        b1= / fit= replace the sweep's for that cell
  any other key=value   an mpu-run override (kappa, m, seed, model, algorithm, server.*, client.*, ...;
                        `mpu-run --help` lists them)
"""
from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mpu_cli.mpu.settings import ServerOptions  # noqa: E402 (after the offline defaults; no torch)

log = logging.getLogger("mpu_cli.audit")

USAGE = ("usage: mpu-audit [kappa=K] [m=M] [seed=S] [model=tiny] [out=DIR] [config=NAME] [b1=true|false] "
         "[fit=true|false] [sweep=true [sweep_kappa=0.01,0.1] [sweep_m=2,4] [sweep_perturb=false,true] "
         "[cells=C1;C2]] [mpu-run overrides]")


class AuditError(ValueError):
    """Bad input: one line on stderr, exit code 2."""


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise AuditError(f"{key}={value!r} is not a boolean; accepted: true, false")


def _list(key: str, value: str, cast) -> list:
    try:
        items = [cast(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise AuditError(f"{key}={value!r} is not a comma-separated list of {cast.__name__}") from None
    if not items:
        raise AuditError(f"{key}= is empty")
    return items


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """Split the audit's own keys from the config overrides passed to Hydra's compose."""
    opts = {"out": None, "config": "config", "sweep": False, "b1": True, "fit": True, "sweep_kappa": [0.01, 0.1],
            "sweep_m": [2, 4], "sweep_perturb": [False, True], "cells": None}
    overrides = []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.rstrip())
            sys.exit(0)
        key, sep, value = arg.partition("=")
        if not sep:
            raise AuditError(f"argument {arg!r} is not key=value; {USAGE}")
        if key in ("out", "config"):
            opts[key] = value
        elif key == "cells":
            opts[key] = [[o for o in cell.split(",") if o.strip()] for cell in value.split(";") if cell.strip()]
            if not opts[key] or any("=" not in o for cell in opts[key] for o in cell):
                raise AuditError(f"cells={value!r} is not a ';'-separated list of cells of key=value overrides")
        elif key in ("sweep", "b1", "fit"):
            opts[key] = _bool(key, value)
        elif key == "sweep_kappa":
            opts[key] = _list(key, value, float)
        elif key == "sweep_m":
            opts[key] = _list(key, value, int)
        elif key == "sweep_perturb":
            opts[key] = [_bool(key, v) for v in value.split(",")]
        else:
            overrides.append(arg)
    return opts, overrides


def compose_config(overrides: list[str], config_name: str = "config"):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import CONF_DIR, ConfigError, register_configs

    register_configs()

    try:
        check_overrides(overrides, CONF_DIR)  # composed and validated as mpu-run's are: one line naming the value
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        raise AuditError(str(e).splitlines()[0]) from None
    return cfg


def _cell_name(cfg) -> str:
    pert = "_pert" if cfg.server.perturb_unprotected else ""
    plain = ServerOptions()  # the defaults are left out of the name
    alpha = "" if cfg.server.alpha_schedule == plain.alpha_schedule else f"_{cfg.server.alpha_schedule}"
    dtype = "" if cfg.server.publish_dtype == plain.publish_dtype else f"_{cfg.server.publish_dtype}"
    common = f"_c{cfg.server.common_noise:g}" if cfg.server.common_noise else ""
    return f"{cfg.arm}_k{cfg.kappa}_m{cfg.m}{pert}{alpha}{dtype}{common}"


def _check_out(out: Path, names: tuple[str, ...]) -> None:
    from mpu_cli.files import unwritable

    why = unwritable(out)
    if why:
        raise AuditError(f"out={out} is not a writable folder ({why}); accepted: a folder this user can write")
    for n in names:
        if (out / n).exists():
            raise AuditError(f"out={out} already holds {n}; choose another out= (nothing is overwritten)")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        opts, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        if opts["sweep"]:
            out = Path(opts["out"] or f"outputs/audit/{stamp}_sweep")
            _check_out(out, ("privacy_sweep.json",))
            cells = opts["cells"] or [
                [f"kappa={kappa}", f"m={m}", f"server.perturb_unprotected={str(pert).lower()}"]
                for kappa in opts["sweep_kappa"] for m in opts["sweep_m"] for pert in opts["sweep_perturb"]]
            cfgs, steps = [], []
            for cell in cells:
                own = {k: _bool(k, v) for k, _, v in (o.partition("=") for o in cell) if k in ("b1", "fit")}
                steps.append({"b1": opts["b1"], "fit": opts["fit"]} | own)
                cfgs.append(compose_config([*overrides, *(o for o in cell if o.partition("=")[0] not in own)],
                                           opts["config"]))
        else:
            cfgs = [compose_config(overrides, opts["config"])]
            out = Path(opts["out"] or f"outputs/audit/{stamp}_{_cell_name(cfgs[0])}")
            _check_out(out, ("privacy_report.json",))
        from mpu_cli.audit.run import audit, write_sweep

        if not opts["sweep"]:
            audit(cfgs[0], out, b1=opts["b1"], fit=opts["fit"])
            print(f"mpu-audit: wrote {out / 'privacy_report.md'}")
            return
        rows = []
        for i, (cfg, step) in enumerate(zip(cfgs, steps)):
            log.info("sweep cell %d/%d: %s", i + 1, len(cfgs), _cell_name(cfg))
            rows.append(audit(cfg, out / f"{i}_{_cell_name(cfg)}", **step))
        write_sweep(rows, out)
        print(f"mpu-audit: wrote {out / 'privacy_sweep.md'}")
    except (AuditError, FileNotFoundError) as e:
        print(f"mpu-audit: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
