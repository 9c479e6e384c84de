"""Check a command line before Hydra starts: every job it would run is composed and validated first.

Hydra creates the run (or sweep) directory before the task function runs, and its own composition errors
(an unknown group option, an unknown key, a value of the wrong type) exit with code 1 and several lines.
`precheck(argv)` composes the configuration of every job the command line asks for (all combinations of a
`-m` sweep, including `hydra.sweeper.params` set in a config), runs `config.validate` on each and turns any
failure into a `ConfigError` with one line that names the bad value and the accepted ones. Nothing is
written, but with `claim_run_dir`: a single run's directory is then claimed (locked and marked,
run/rundir.precheck), a sweep's folder locked, before Hydra writes into them.
"""

from __future__ import annotations

import re
from pathlib import Path

from mpu_cli.cli.help import group_options, root_schema
from mpu_cli.config import ConfigError, choices_of, did_you_mean, register_configs
from mpu_cli.options import not_one_of
from mpu_cli.run.checks import validate

# Flags with which Hydra does not run the task (help, info, printing the config, completion) or reads
# configs from elsewhere: the precheck leaves those command lines to Hydra.
_SKIP_FLAGS = (
    "help",
    "hydra_help",
    "info",
    "cfg",
    "shell_completion",
    "config_path",
    "config_dir",
    "experimental_rerun",
)


def precheck(argv: list[str], conf_dir: str, claim_run_dir: bool = False, config_name: str = "config",
             check=validate) -> list[str]:
    """Check the command line (with `check`: mpu-run's checks unless told otherwise); returns the overrides to add
    to it (the claimed run directory, where Hydra would name it anew)."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)  # bad flags: argparse prints usage and exits 2
    if any(getattr(args, flag, None) for flag in _SKIP_FLAGS):
        return []
    pinned: list[str] = []
    check_overrides(
        args.overrides, conf_dir, config_name=args.config_name or config_name, multirun=args.multirun,
        claimed=pinned if claim_run_dir else None, check=check,
    )
    return pinned


def check_overrides(
    overrides: list[str], conf_dir: str, config_name: str = "config", multirun: bool = False,
    claimed: list[str] | None = None, check=validate,
) -> int:
    """Compose and validate every job of a command line (with `check`: mpu-run's checks unless told otherwise);
    returns the number of jobs checked. claimed: a list to claim a single run's directory or a sweep's folder into
    (the override that pins Hydra to it, where needed)."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from hydra.types import RunMode

    register_configs()  # the structured schema the root config names
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)!r}: {_one_line(e)}") from None
    if not multirun:
        for o in parsed:
            if o.is_sweep_override():
                raise ConfigError(
                    f"{o.input_line!r} has several values: add -m (--multirun) to sweep over them, "
                    "or quote the value to use it as one string"
                )

    with initialize_config_dir(
        version_base=None, config_dir=str(Path(conf_dir).resolve()), job_name="mpu_run"
    ):
        hydra = GlobalHydra.instance().hydra

        def compose(job: list[str], mode=RunMode.RUN):
            try:
                return hydra.compose_config(config_name, job, run_mode=mode, with_log_configuration=False)
            except Exception as e:  # every Hydra/OmegaConf composition error
                raise ConfigError(_explain(e, job, compose, conf_dir, config_name)) from None

        jobs = [list(overrides)]
        if multirun:
            master = compose(list(overrides), RunMode.MULTIRUN)
            _check_sweep_dir(master)
            sweeper = master.hydra.sweeper
            if str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
                params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
                try:
                    swept = parser.parse_overrides(params + list(overrides))
                except OverrideParseException as e:
                    raise ConfigError(f"cannot parse hydra.sweeper.params {params}: {_one_line(e)}") from None
                jobs = BasicSweeper.split_arguments(swept, None)[0]
            else:  # another sweeper (e.g. a search): its jobs are only known while it runs
                jobs = [[o.input_line for o in parsed if not o.is_sweep_override()]]
        for job in jobs:
            cfg = compose(job)
            _check_choices(cfg, conf_dir)
            try:
                check(cfg)
            except ConfigError as e:
                if len(jobs) > 1:
                    raise ConfigError(f"{e} (in the sweep job {' '.join(job)})") from None
                raise
            if not multirun and claimed is not None:  # claimed, then refused if finished / mismatching
                from mpu_cli.run.rundir import precheck as claim_run_dir

                pin = claim_run_dir(cfg)
                if pin:
                    claimed.append(pin)
        if multirun and claimed is not None:  # the sweep's folder, locked before Hydra writes into it
            from mpu_cli.run.rundir import precheck_sweep

            pin = precheck_sweep(master)
            if pin:
                claimed.append(pin)
    return len(jobs)


def _check_sweep_dir(master) -> None:
    """The sweep folder must be creatable and writable before Hydra starts the first job (nothing is created)."""
    from mpu_cli.files import unwritable

    try:
        sweep_dir = str(master.hydra.sweep.dir)
    except Exception:  # noqa: BLE001 (an unresolvable name: Hydra reports it as it starts)
        return
    why = unwritable(Path(sweep_dir), create=False)
    if why:
        raise ConfigError(f"hydra.sweep.dir={sweep_dir!r} cannot take the sweep ({why}); accepted: a folder this "
                          "user can write")


def _check_choices(cfg, conf_dir: str) -> None:
    """An `optional` group (experiment) silently ignores an option that does not exist: refuse it."""
    choices = cfg.hydra.runtime.choices
    for group, choice in choices.items():
        if choice is None or group.startswith("hydra/") or not (Path(conf_dir) / group).is_dir():
            continue
        if not (Path(conf_dir) / group / f"{choice}.yaml").is_file():
            options = group_options(conf_dir, group)
            raise ConfigError(f"{group}={choice!r} is not one of {options}{did_you_mean(choice, options)}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _explain(e: Exception, job: list[str], compose, conf_dir: str, config_name: str) -> str:
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    msg = str(e)
    if isinstance(e, MissingConfigException):
        missing = e.missing_cfg_file or ""
        if "/" in missing:
            group, name = missing.rsplit("/", 1)
            options = list(e.options) if e.options else group_options(conf_dir, group)
            return f"{group}={name!r} is not one of {options}{did_you_mean(name, options)}"
        if missing == config_name or "Cannot find primary config" in msg:
            return f"config name {config_name!r} is not one of {group_options(conf_dir, '.')}"
    cause = e.__cause__
    m = re.match(r"Could not override '([^']+)'", msg)
    if m and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        key = m.group(1)
        parent, _, _leaf = key.rpartition(".")
        rest = [o for o in job if o.lstrip("+~").split("=", 1)[0].split("@", 1)[0] != key]
        accepted = ""
        try:
            from omegaconf import DictConfig, OmegaConf

            node = OmegaConf.select(compose(rest), parent) if parent else compose(rest)
            if isinstance(node, DictConfig):
                accepted = (
                    f"; accepted keys{' of ' + parent if parent else ''}: "
                    f"{sorted(k for k in node if parent or k != 'hydra')}"
                )
        except Exception:
            pass
        return f"unknown key {key!r}{accepted}"
    m = re.match(r"Error merging override (.+)", msg)
    if m and isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        choices = choices_of(root_schema(config_name, conf_dir), cause.full_key)
        if choices is not None:  # an Enum: the same line as every other choice
            return str(not_one_of(cause.full_key, cause.value, choices))
    if m and isinstance(cause, ValidationError):
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        return f"{m.group(1)}: {reason}"
    if msg.startswith("Ambiguous value for argument"):
        bad = re.search(r"'([^']+)'", msg)
        return f"{bad.group(1) if bad else msg!r} has several values: add -m (--multirun) to sweep over them"
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip() and not ln.startswith("\t")]
    lines = [ln for ln in lines if not ln.startswith(("Config search path", "provider="))]
    text = " ".join(lines) or type(e).__name__
    if cause is not None and str(cause) and str(cause).splitlines()[0] not in text:
        text += f" ({str(cause).splitlines()[0]})"
    return text
