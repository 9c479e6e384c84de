"""mpu-audit: what a curious client (A0–A5) and a curious server (B1) can learn in one MPU round.

The server is built from the prepared target and base of the configuration and publishes one round; from the
client's view only (the copies, the public base, the architecture) the audit mounts A0 (tensors published
exactly), A1 (one copy taken as θ), A2 (each copy aligned to θ_base), A3 (copies aligned to copy 1), A4 (the
aligned copies averaged), A5 (the point of their affine hull closest to θ_base), A6 (the hull point under which
the model best fits the client's own forget set); after one real round of unlearning, from the server's view,
B1 (forget items ranked by their loss increase). The server's secrets are used only to score. The copies are
written to files and read one tensor at a time; each phase's time and peak memory are reported. Writes
privacy_report.json / privacy_report.md, or for a sweep one folder per cell plus privacy_sweep.{json,csv,md}; each
cell of a sweep runs in a process of its own, so no cell's memory counts in another's.

    mpu-audit kappa=0.1 m=2 seed=0 [model=tiny] [out=DIR] [b1=false] [any mpu-run override]
    mpu-audit sweep=true seed=0 [sweep_kappa=0.01,0.1] [sweep_m=2,4] [sweep_perturb=false,true] [out=DIR]
    mpu-audit sweep=true config=reproduce_smollm2 cells="kappa=0.1,m=2;kappa=0.1,m=4" seed=0 [only=1]

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
  only=I,J              run only these cells of the sweep (numbered from 0 in sweep order) into out=, which may
                        hold other cells already; privacy_sweep.* is written once every cell's report is there
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
         "[cells=C1;C2] [only=I,J]] [mpu-run overrides]")


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
            "sweep_m": [2, 4], "sweep_perturb": [False, True], "cells": None, "only": None}
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
        elif key in ("sweep_m", "only"):
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


def _run_cell(cfg, out: Path, step: dict) -> None:
    """One cell of a sweep, in the process of its own that audit_cell starts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from mpu_cli.audit.run import audit
    from mpu_cli.config import register_configs

    register_configs()  # the configuration's resolvers (e.g. pypi_gguf) are registered per process
    try:
        audit(cfg, out, **step)
    except (AuditError, FileNotFoundError) as e:
        print(f"mpu-audit: error: {e}", file=sys.stderr)
        sys.exit(2)


def audit_cell(cfg, out: Path, step: dict) -> dict:
    """Audit one cell in a fresh process (its memory goes back to the system when it ends); its report."""
    import json
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=_run_cell, args=(cfg, out, step))
    proc.start()
    proc.join()
    if proc.exitcode == 2:
        sys.exit(2)  # bad input: the cell's process printed its one line
    if proc.exitcode != 0:
        raise RuntimeError(f"mpu-audit: the sweep's cell {out.name} failed (exit code {proc.exitcode})")
    return json.loads((out / "privacy_report.json").read_text())


def _sweep(cfgs: list, steps: list[dict], out: Path, only: list[int] | None) -> bool:
    """Run the cells (those of `only`, or all), each in its own process; write privacy_sweep.* once every cell's
    report is in `out`. True when it was written."""
    import json

    from mpu_cli.audit.run import write_sweep

    folders = [out / f"{i}_{_cell_name(cfg)}" for i, cfg in enumerate(cfgs)]
    todo = list(range(len(cfgs))) if only is None else only
    for i in todo:
        _check_out(folders[i], ("privacy_report.json",))
    reports = {}
    for i in todo:
        log.info("sweep cell %d/%d: %s", i + 1, len(cfgs), _cell_name(cfgs[i]))
        reports[i] = audit_cell(cfgs[i], folders[i], steps[i])
    if not all((f / "privacy_report.json").is_file() for f in folders):
        return False
    write_sweep([reports.get(i) or json.loads((f / "privacy_report.json").read_text())
                 for i, f in enumerate(folders)], out)
    return True


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        opts, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        if opts["sweep"]:
            out = Path(opts["out"] or f"outputs/audit/{stamp}_sweep")
            cells = opts["cells"] or [
                [f"kappa={kappa}", f"m={m}", f"server.perturb_unprotected={str(pert).lower()}"]
                for kappa in opts["sweep_kappa"] for m in opts["sweep_m"] for pert in opts["sweep_perturb"]]
            bad = [i for i in opts["only"] or [] if not 0 <= i < len(cells)]
            if bad:
                raise AuditError(f"only= names cells {bad} the sweep does not have; accepted: 0 to {len(cells) - 1}")
            _check_out(out, ("privacy_sweep.json",))
            cfgs, steps = [], []
            for cell in cells:
                own = {k: _bool(k, v) for k, _, v in (o.partition("=") for o in cell) if k in ("b1", "fit")}
                steps.append({"b1": opts["b1"], "fit": opts["fit"]} | own)
                cfgs.append(compose_config([*overrides, *(o for o in cell if o.partition("=")[0] not in own)],
                                           opts["config"]))
            if _sweep(cfgs, steps, out, opts["only"]):
                print(f"mpu-audit: wrote {out / 'privacy_sweep.md'}")
            else:
                print(f"mpu-audit: wrote cells {opts['only']} into {out}; privacy_sweep.md follows once every "
                      "cell is there")
            return
        if opts["only"] is not None:
            raise AuditError("only= chooses cells of a sweep; accepted with sweep=true")
        cfg = compose_config(overrides, opts["config"])
        out = Path(opts["out"] or f"outputs/audit/{stamp}_{_cell_name(cfg)}")
        _check_out(out, ("privacy_report.json",))
        from mpu_cli.audit.run import audit

        audit(cfg, out, b1=opts["b1"], fit=opts["fit"])
        print(f"mpu-audit: wrote {out / 'privacy_report.md'}")
    except (AuditError, FileNotFoundError) as e:
        print(f"mpu-audit: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
