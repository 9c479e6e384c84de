"""Input checks on the models of a run: each model is of a family the reparameterization supports (every tensor
of its blocks with a declared role, models/family.py), each model folder holds a loadable model, the target (and
the retain model) have the base's architecture, and their tensors have the base's / target's shapes. A mismatch is
a ConfigError (one line, exit code 2) raised before any unlearning or evaluation starts."""
from __future__ import annotations

import json
from pathlib import Path

from mpu_cli.models.family import TIED_HEAD, Family, UnsupportedModel, family_of
from mpu_cli.options import ConfigError


def _local_folder(path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(str(path)).expanduser()
    return p if p.is_dir() else None


def _config(folder: Path, key: str) -> dict:
    f = folder / "config.json"
    if not f.is_file():
        raise ConfigError(f"{key}={str(folder)!r} holds no model (no config.json); accepted: a model folder saved "
                          "by transformers (config.json + *.safetensors)")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}={str(folder)!r}: config.json is not valid JSON ({e})") from None


def _shapes(folder: Path, key: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors headers only (no weights are read)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        if list(folder.glob("*.bin")):
            return {}  # a PyTorch checkpoint: shapes are checked when it is loaded
        raise ConfigError(f"{key}={str(folder)!r} holds no weights (no *.safetensors or *.bin file)")
    out = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                    out[name] = tuple(h.get_slice(name).get_shape())
        except Exception as e:  # noqa: BLE001 (any unreadable file is the same bad input)
            raise ConfigError(f"{key}={str(folder)!r}: {f.name} is not a readable safetensors file (damaged or "
                              f"truncated: {' '.join(str(e).split())})") from None
    return out


def _arch(cfg: dict) -> str:
    return f"{cfg.get('model_type')} ({', '.join(cfg.get('architectures') or []) or 'no architectures'})"


def model_family(where: str, key: str, shown) -> Family:
    """The adapter of the model at `where` (a local folder or a Hub name); ConfigError naming the supported
    families for any other model_type."""
    folder = _local_folder(where)
    if folder is not None:
        cfg = _config(folder, key)
    else:
        from transformers import PretrainedConfig

        cfg, _ = PretrainedConfig.get_config_dict(where)
    try:
        return family_of(cfg.get("model_type"))
    except UnsupportedModel as e:
        raise ConfigError(f"{key}={shown!r}: {e}") from None


def _check_roles(family: Family, shapes: dict, key: str, shown) -> None:
    try:
        family.check_names(shapes)
    except UnsupportedModel as e:
        raise ConfigError(f"{key}={shown!r}: {e}") from None


def check_models(prepared, model_cfg) -> None:
    """Base, target and retain must share one supported architecture and the same tensor shapes."""
    ref_key = "model.base" if _local_folder(prepared.base) else "model.target"
    ref = _local_folder(prepared.base) or _local_folder(prepared.target)
    if ref is None:
        return  # Hub names: checked by transformers when loaded
    ref_value = model_cfg.get("base") if ref_key == "model.base" else model_cfg.get("target")
    ref_cfg, ref_shapes = _config(ref, ref_key), _shapes(ref, ref_key)
    family = model_family(str(ref), ref_key, ref_value)
    _check_roles(family, ref_shapes, ref_key, ref_value)
    for key, path in (("model.target", prepared.target), ("model.retain", prepared.retain)):
        folder = _local_folder(path)
        if folder is None or folder == ref:
            continue
        value = model_cfg.get(key.split(".", 1)[1])
        shown = value if value not in (None, "finetune") else str(folder)
        cfg = _config(folder, key)
        if cfg.get("model_type") != ref_cfg.get("model_type"):
            raise ConfigError(f"{key}={shown!r} is a {_arch(cfg)} model but {ref_key}={ref_value!r} is "
                              f"{_arch(ref_cfg)}; accepted: a model of the base's architecture")
        shapes = _shapes(folder, key)
        _check_roles(family, shapes, key, shown)
        if not shapes or not ref_shapes:
            continue
        for name, shape in ref_shapes.items():
            if name in shapes and shapes[name] != shape:
                raise ConfigError(f"{key}={shown!r}: tensor {name!r} has shape {list(shapes[name])} but "
                                  f"{ref_key}={ref_value!r} has {list(shape)}; accepted: a model of the same size "
                                  "as the base")
        missing = sorted(set(ref_shapes) - set(shapes) - {TIED_HEAD})
        if missing:
            raise ConfigError(f"{key}={shown!r} lacks {len(missing)} tensors of {ref_key}={ref_value!r}, e.g. "
                              f"{missing[0]!r}; accepted: a model of the base's architecture")
