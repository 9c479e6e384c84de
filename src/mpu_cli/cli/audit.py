"""mpu-audit: what a curious client (A0–A5) and a curious server (B1) can learn in one MPU round.

The server is built from the prepared target and base of the configuration and publishes one round; from the
client's view only (the copies, the public base, the architecture) the audit mounts A0 (tensors published
exactly), A1 (one copy taken as θ), A2 (each copy aligned to θ_base), A3 (copies aligned to copy 1), A4 (the
aligned copies averaged), A5 (the point of their affine hull closest to θ_base); after one real round of
unlearning, from the server's view, B1 (forget items ranked by their loss increase). The server's secrets are
used only to score. Writes privacy_report.json / privacy_report.md, or for a sweep one folder per cell plus
privacy_sweep.{json,csv,md}.

    mpu-audit kappa=0.1 m=2 seed=0 [model=tiny] [out=DIR] [b1=false] [any mpu-run override]
    mpu-audit sweep=true seed=0 [sweep_kappa=0.01,0.1] [sweep_m=2,4] [sweep_perturb=false,true] [out=DIR]

Keys (key=value):
  out=DIR               the output folder (default: outputs/audit/<time>_<cell> or <time>_sweep); never
                        overwritten
  b1=true|false         also run one unlearning round and the server-side attack B1 (default: true)
  sweep=true|false      audit every cell of sweep_kappa x sweep_m x sweep_perturb (default: false)
  sweep_kappa=K1,K2     the sweep's noise levels (default: 0.01,0.1)
  sweep_m=M1,M2         the sweep's numbers of copies (default: 2,4)
  sweep_perturb=...     the sweep's server.perturb_unprotected values (default: false,true)
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

log = logging.getLogger("mpu_cli.audit")

USAGE = ("usage: mpu-audit [kappa=K] [m=M] [seed=S] [model=tiny] [out=DIR] [b1=true|false] "
         "[sweep=true [sweep_kappa=0.01,0.1] [sweep_m=2,4] [sweep_perturb=false,true]] [mpu-run overrides]")


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
    opts = {"out": None, "sweep": False, "b1": True, "sweep_kappa": [0.01, 0.1], "sweep_m": [2, 4],
            "sweep_perturb": [False, True]}
    overrides = []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.rstrip())
            sys.exit(0)
        key, sep, value = arg.partition("=")
        if not sep:
            raise AuditError(f"argument {arg!r} is not key=value; {USAGE}")
        if key in ("out",):
            opts["out"] = value
        elif key in ("sweep", "b1"):
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


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import CONF_DIR, ConfigError, register_configs

    register_configs()

    try:
        check_overrides(overrides, CONF_DIR)  # composed and validated as mpu-run's are: one line naming the value
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        raise AuditError(str(e).splitlines()[0]) from None
    return cfg


def _cell_name(cfg) -> str:
    pert = "_pert" if cfg.server.perturb_unprotected else ""
    return f"{cfg.arm}_k{cfg.kappa}_m{cfg.m}{pert}"


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
            cfgs = []
            for kappa in opts["sweep_kappa"]:
                for m in opts["sweep_m"]:
                    for pert in opts["sweep_perturb"]:
                        cfgs.append(compose_config(
                            [*overrides, f"kappa={kappa}", f"m={m}",
                             f"server.perturb_unprotected={str(pert).lower()}"]))
        else:
            cfgs = [compose_config(overrides)]
            out = Path(opts["out"] or f"outputs/audit/{stamp}_{_cell_name(cfgs[0])}")
            _check_out(out, ("privacy_report.json",))
        from mpu_cli.audit.run import audit, write_sweep

        if not opts["sweep"]:
            audit(cfgs[0], out, b1=opts["b1"])
            print(f"mpu-audit: wrote {out / 'privacy_report.md'}")
            return
        rows = []
        for i, cfg in enumerate(cfgs):
            log.info("sweep cell %d/%d: %s", i + 1, len(cfgs), _cell_name(cfg))
            rows.append(audit(cfg, out / f"{i}_{_cell_name(cfg)}", b1=opts["b1"]))
        write_sweep(rows, out)
        print(f"mpu-audit: wrote {out / 'privacy_sweep.md'}")
    except (AuditError, FileNotFoundError) as e:
        print(f"mpu-audit: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
