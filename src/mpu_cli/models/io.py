"""Loading and saving causal LMs: Hub names, local folders, GGUF files; safetensors written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def _gguf_kwargs(path: str) -> tuple[str, dict]:
    """A `.gguf` file is loaded through transformers' GGUF reader (needs the `gguf` package)."""
    p = Path(path)
    if p.suffix == ".gguf":
        return str(p.parent), {"gguf_file": p.name}
    return path, {}


def load_model(path: str, dtype: torch.dtype = torch.float32):
    where, extra = _gguf_kwargs(path)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **extra)
    model.eval()
    return model


def load_tokenizer(path: str):
    where, extra = _gguf_kwargs(path)
    tok = AutoTokenizer.from_pretrained(where, **extra)
    if tok.pad_token is None:
        # A real pad token is preferred; without one, reuse EOS (masking is by position, so this is safe).
        tok.pad_token = tok.eos_token
    return tok


def save_model(model, tokenizer, out_dir: Path) -> None:
    """Save as safetensors into a temporary folder, then rename: readers never see a half-written model."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def state_dict_fp32(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float32).clone() for k, v in model.state_dict().items()}


def load_state_into(model, state: dict[str, torch.Tensor]) -> None:
    """Copy a state dict into a model, casting to each parameter's own dtype."""
    own = model.state_dict()
    missing = set(own) - set(state)
    if missing:
        raise ValueError(f"state is missing {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))
