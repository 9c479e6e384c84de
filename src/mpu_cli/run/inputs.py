"""Input checks a run makes before it writes anything: every model reference can be opened, every data
config it reads is valid."""
from __future__ import annotations

from mpu_cli.evals import benchmarks
from mpu_cli.models.check import model_family
from mpu_cli.models.io import resolve_model_path


def check_model_sources(model_cfg) -> None:
    """Fail fast, before any building, on a model reference that cannot be opened (e.g. a Hub name
    while offline): FileNotFoundError with one line naming the key."""
    for key in ("base", "target", "retain", "tokenizer"):
        value = model_cfg.get(key)
        if value and value not in ("embedded", "finetune"):
            resolve_model_path(value, f"model.{key}")


def check_model_families(model_cfg) -> None:
    """Fail fast, before any building, on a model of a family the reparameterization does not support:
    ConfigError naming the supported ones. The embedded base and a .gguf model (its family is read once it
    is converted) are checked with the prepared models (models/check.check_models)."""
    for key in ("base", "target", "retain"):
        value = model_cfg.get(key)
        if value and value not in ("embedded", "finetune"):
            where = resolve_model_path(value, f"model.{key}")
            if not where.endswith(".gguf"):
                model_family(where, f"model.{key}", value)


def check_data(data_cfg) -> None:
    """Load (and so validate, data.validate) every data config the run reads, before anything is written."""
    benchmarks.of(data_cfg).check_data(data_cfg)


def check_cache_dir(cache_dir: str) -> None:
    """The cache must be writable before two minutes of model building find out it is not."""
    import os
    import tempfile
    from pathlib import Path

    from mpu_cli.config import ConfigError

    path = Path(os.path.expanduser(str(cache_dir)))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(f"prepare.cache_dir={str(path)!r} is not writable ({e.strerror}); accepted: a writable "
                          "folder (set prepare.cache_dir=… or MPU_CACHE_DIR)") from None
