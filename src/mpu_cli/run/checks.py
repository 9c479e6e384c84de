"""The checks a run's configuration passes before any work starts: the schema's own (unknown keys, finite
numbers, declared ranges), then each rule that belongs to the owner of a concept (the algorithm registry, the
devices, the transport, the cluster jobs, the model and data sources), asked here. Hydra has already checked every type and every
Enum choice while composing.

Every failure is a ConfigError with one line naming the bad value and the accepted ones.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from mpu_cli.config import MPUConfig, check_schema
from mpu_cli.options import ConfigError, did_you_mean


def validate(cfg) -> None:
    """Checks that need no model or data: fail fast, before a run directory fills up."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        _validate(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve
        raise ConfigError(" ".join(str(e).split())) from e

def _validate(cfg) -> None:
    from mpu_cli.evals import benchmarks
    from mpu_cli.unlearn.algorithms import ALGORITHMS

    check_schema(cfg, MPUConfig)
    if cfg.algorithm.name not in ALGORITHMS:
        raise ConfigError(f"algorithm={cfg.algorithm.name!r} is not one of {sorted(ALGORITHMS)}"
                          f"{did_you_mean(cfg.algorithm.name, ALGORITHMS)}")
    check_algorithm_params(cfg.algorithm.name, cfg.algorithm.params)
    _check_server(cfg)
    _check_accelerate(cfg.client)
    _check_lora(cfg)
    _check_device("device", cfg.device)
    _check_device("client.device", cfg.client.device)
    check_data_config(cfg.data)
    _check_reference(cfg)
    _check_jobs(cfg)
    _check_run_id(cfg.get("run_id"))
    model = "model folder or .gguf file"
    layout = benchmarks.of(cfg.data).source_layout
    _check_source("data.source", cfg.data.source, ("embedded",), f"folder laid out like {layout}", folder=True)
    _check_source("model.base", cfg.model.base, ("embedded", None), model)
    _check_source("model.target", cfg.model.target, ("finetune",), model)
    _check_source("model.retain", cfg.model.retain, ("finetune", None), model)
    _check_source("model.tokenizer", cfg.model.tokenizer, (None,), "tokenizer folder or .gguf file")


def check_data_config(data_cfg) -> None:
    """The benchmark and its splits (Benchmark.split_problem: e.g. TOFU's forget01|05|10, MUSE's forget with
    retain1|retain2)."""
    from mpu_cli.evals import benchmarks

    try:
        bench = benchmarks.of(data_cfg)
    except ValueError as e:
        raise ConfigError(f"{e}{did_you_mean(data_cfg.get('benchmark'), benchmarks.BENCHMARKS)}") from None
    problem = bench.split_problem(data_cfg)
    if problem is not None:
        message, accepted = problem
        raise ConfigError(message + did_you_mean(str(data_cfg.split), accepted))


def _check_server(cfg) -> None:
    """Every rule of the server's settings (ServerConfig.validate), before any work, named as mpu-run's keys."""
    from mpu_cli.mpu.settings import ServerConfig, ServerOptions

    try:
        ServerConfig.from_config(cfg)
    except ValueError as e:
        key = str(e).split("=", 1)[0]
        raise ConfigError(f"{'server.' if key in ServerOptions.__dataclass_fields__ else ''}{e}") from None


def _check_run_id(run_id) -> None:
    import re

    if run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", str(run_id)):
        raise ConfigError(f"run_id={run_id!r} is not valid; accepted: letters, digits, '.', '_' and '-' "
                          "(a folder name, first character a letter or digit)")

def _check_reference(cfg) -> None:
    from mpu_cli.run.slots import uses_file_transport
    from mpu_cli.unlearn.settings import ReferencePolicy

    if cfg.client.reference == ReferencePolicy.server_clean and uses_file_transport(cfg):
        raise ConfigError("client.reference='server_clean' hands the exact θ_0 to the client, which the files "
                          "transport (also used by runner.launcher=submitit and by runner.parallel_copies > 1 on a "
                          "GPU or under accelerate) never does; accepted there: 'client_copy' (or use "
                          "transport=inprocess on the CPU)")

def _check_jobs(cfg) -> None:
    from mpu_cli.run.slots import as_cluster_jobs

    if as_cluster_jobs(cfg):
        from mpu_cli.run.jobs import check

        try:
            check(cfg.runner.submitit)
        except ValueError as e:
            raise ConfigError(str(e)) from None

def _check_lora(cfg) -> None:
    from omegaconf import OmegaConf

    from mpu_cli.unlearn.settings import ClientConfig, check_lora

    if cfg.client.lora.enabled:
        try:
            check_lora(ClientConfig(**OmegaConf.to_container(cfg.client, resolve=True)))
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _check_accelerate(client) -> None:
    from mpu_cli.unlearn.accel import resolve_config

    name = client.get("accelerate_config")
    if name:
        try:
            resolve_config(name)
        except ValueError as e:
            raise ConfigError(str(e)) from None

def _check_device(key: str, name) -> None:
    from mpu_cli.devices import pick_device

    try:
        pick_device(name, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None

def _check_source(key: str, value, special: tuple, what: str, folder: bool = False) -> None:
    """A value that can only be a filesystem path must exist; anything else must look like a Hub name."""
    from mpu_cli.data.tofu import _looks_like_path

    if value in special:
        return
    accepted = ", ".join([repr(s) if s is not None else "null" for s in special]
                         + [f"an existing local {what}", "a Hub name such as 'owner/name'"])
    p = Path(str(value)).expanduser()
    if p.exists():
        if folder and not p.is_dir():
            raise ConfigError(f"{key}={value!r} is a file; accepted: {accepted}")
        return
    if _looks_like_path(str(value)) or p.suffix == ".gguf":
        if not str(value).startswith("pypi:"):
            raise ConfigError(f"{key}={value!r} does not exist; accepted: {accepted}")
    if key.startswith("model."):  # pypi:<package>, and Hub names that offline must be in the local cache
        from mpu_cli.models.io import resolve_model_path

        try:
            resolve_model_path(str(value), key)
        except FileNotFoundError as e:
            raise ConfigError(" ".join(str(e).split())) from None

def check_algorithm_params(name: str, params) -> None:
    """Every key of algorithm.params must be a parameter of the algorithm (open-unlearning's names)."""
    from mpu_cli.unlearn.algorithms import ALGORITHMS

    sig = inspect.signature(ALGORITHMS[name].__init__)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [n for n in sig.parameters if n != "self"]
    for key in params or {}:
        if key not in accepted:
            raise ConfigError(f"algorithm.params.{key} is not a parameter of {name}; accepted: {accepted}")

