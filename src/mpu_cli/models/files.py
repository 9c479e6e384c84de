"""A model's weights as safetensors files, read one tensor at a time: a Hugging Face model folder (one
model.safetensors, or shards listed in model.safetensors.index.json) or one file the server wrote.

`TensorFiles` is a read-only mapping name -> tensor in the model's state-dict order; each tensor is read when asked
for, with plain reads (transport.exchange.LazyStateDict), so a pass over the model holds one tensor, and cast as
`load_model(path, dtype)` would have cast it. A tied tensor (a tied LM head) reads the one tensor the folder stores
under either name; like the server's copy of a loaded model's state dict, the two names are separate tensors.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class TensorFiles(Mapping):
    """name -> tensor read from its file, cast through `casts` in order (stored -> model dtype -> fp32 …)."""

    def __init__(self, sources: dict, casts: tuple[torch.dtype, ...] = ()):
        self._sources = sources  # name -> (LazyStateDict, key in that file)
        self._casts = tuple(casts)

    def __getitem__(self, name) -> torch.Tensor:
        src, key = self._sources[name]
        dtype, rest = self._conversion(src.dtype(key))
        return self._cast(src.read(key, dtype), rest)

    def rows(self, name, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop (the first axis) of a tensor, read alone and cast like a whole one."""
        src, key = self._sources[name]
        dtype, rest = self._conversion(src.dtype(key))
        return self._cast(src.rows(key, start, stop, dtype), rest)

    def _conversion(self, stored: torch.dtype) -> tuple[torch.dtype | None, tuple[torch.dtype, ...]]:
        """(the dtype the read converts to, the casts left after it): the read converts when the casts change
        the dtype once (stored -> fp32); a chain that changes it twice (fp32 -> bf16 -> fp32) rounds on the way,
        so the read keeps the stored dtype and every cast is applied."""
        changes = [d for prev, d in zip((stored, *self._casts), self._casts) if d != prev]
        return (changes[0], ()) if len(changes) == 1 else (None, self._casts)

    @staticmethod
    def _cast(t: torch.Tensor, casts: tuple[torch.dtype, ...]) -> torch.Tensor:
        for dtype in casts:
            t = t.to(dtype)
        return t

    def __iter__(self):
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, name) -> bool:
        return name in self._sources

    def shape(self, name) -> tuple[int, ...]:
        src, key = self._sources[name]
        return src.shape(key)

    def dtype(self, name) -> torch.dtype:
        src, key = self._sources[name]
        return self._casts[-1] if self._casts else src.dtype(key)

    def then(self, dtype: torch.dtype) -> TensorFiles:
        """The same files, each tensor further cast to `dtype`."""
        return TensorFiles(self._sources, self._casts + (dtype,))


def open_file(path: Path) -> TensorFiles:
    """One safetensors file, its tensors in the file's header order."""
    from mpu_cli.transport.exchange import LazyStateDict

    lazy = LazyStateDict(Path(path))
    return TensorFiles({n: (lazy, n) for n in lazy})


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a model folder: the shards its index lists, or model.safetensors; [] when neither."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        shards = json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"].values()
        return [folder / s for s in dict.fromkeys(shards)]
    return [folder / SINGLE] if (folder / SINGLE).is_file() else []


def state_names(config) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(name -> shape in state-dict order, name -> first name sharing its weights) of a transformers config's
    causal LM, from a model on the meta device (no weights allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    seen: dict[int, str] = {}
    shapes, aliases = {}, {}
    for name, t in model.state_dict(keep_vars=True).items():
        shapes[name] = tuple(t.shape)
        aliases[name] = seen.setdefault(id(t), name)
    return shapes, aliases


def _folder(where: str) -> Path | None:
    """The local folder of a resolved model reference: itself, or the Hub snapshot (weights and configs only)."""
    if Path(where).is_dir():
        return Path(where)
    if Path(where).exists():
        return None  # a single file (GGUF is converted before this): no folder to stream from
    from huggingface_hub import snapshot_download

    from mpu_cli.models.io import hub_offline

    try:
        return Path(snapshot_download(where, allow_patterns=["*.json", "*.safetensors"],
                                      local_files_only=hub_offline()))
    except (OSError, ValueError):
        return None


def open_folder(folder: Path, config) -> TensorFiles | None:
    """The model folder's weights as `TensorFiles` in the config's state-dict order (no cast), or None when its
    safetensors files do not hold every tensor with its shape."""
    from mpu_cli.transport.exchange import LazyStateDict

    stored: dict[str, LazyStateDict] = {}
    for path in safetensors_files(folder):
        lazy = LazyStateDict(path)
        stored |= dict.fromkeys(lazy, lazy)
    if not stored:
        return None
    shapes, aliases = state_names(config)
    groups: dict[str, list[str]] = {}
    for name, first in aliases.items():
        groups.setdefault(first, []).append(name)
    sources = {}
    for name, shape in shapes.items():
        key = next((n for n in [name, *groups[aliases[name]]] if n in stored), None)
        if key is None or stored[key].shape(key) != shape or not stored[key].dtype(key).is_floating_point:
            return None
        sources[name] = (stored[key], key)
    return TensorFiles(sources)


def open_model(path: str, dtype: torch.dtype, cache_dir: str | Path | None = None) -> Mapping:
    """A model's weights in `dtype` as `load_model(path, dtype)` gives them: read lazily from its safetensors
    files where it has them, else the loaded model's state dict (every tensor in memory)."""
    from transformers import AutoConfig

    from mpu_cli.models.io import load_model, local_model_path

    where = local_model_path(path, cache_dir=cache_dir)
    config = AutoConfig.from_pretrained(where)
    folder = _folder(where)
    files = open_folder(folder, config) if folder is not None else None
    if files is not None:
        return files.then(dtype)
    model = load_model(where, dtype)
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
