"""A model's identity: the content of every file that loading it reads (weights, config.json, tokenizer files),
hashed file by file with the one hash helper. It keys the caches built from a model and the evaluation cache,
it is results.csv's target_hash, and a run records it when it starts and compares it when it resumes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mpu_cli.digest import file_sha256, value_digest

# Top-level files of a model folder that transformers reads: weights, configs, tokenizers, chat templates.
# Pickled weights count only where there are no safetensors (transformers then loads them instead).
WEIGHTS = ".safetensors"
PICKLED = ".bin"
READ_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken")
# Files our caches put beside a model (their markers), which loading never reads.
NOT_READ = frozenset({"COMPLETE", "recipe.json"})


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder that make up its identity, sorted by name."""
    files = [f for f in Path(folder).iterdir() if f.is_file() and f.name not in NOT_READ]
    has_safetensors = any(f.suffix == WEIGHTS for f in files)
    return sorted((f for f in files if f.suffix in (WEIGHTS, *READ_SUFFIXES)
                   or (f.suffix == PICKLED and not has_safetensors)), key=lambda f: f.name)


@dataclass(frozen=True)
class ModelIdentity:
    """`source`: the folder, file or Hub name; `files`: name -> SHA-256 of each file read (empty for a Hub name,
    which stands for itself)."""
    source: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """16 hex: the content of all its files (a Hub name: the name)."""
        return value_digest(self.files) if self.files else self.source

    def changed_file(self, other: ModelIdentity) -> str | None:
        """The first file (a path) whose content differs from `other`'s, or that only one of them has; None
        when both have the same content."""
        for name in sorted(set(self.files) | set(other.files)):
            if self.files.get(name) != other.files.get(name):
                return str(Path(self.source) / name) if Path(self.source).is_dir() else self.source
        return None if self.digest == other.digest else self.source

    def to_json(self) -> dict:
        return {"source": self.source, "files": dict(self.files)}

    @classmethod
    def from_json(cls, value: dict) -> ModelIdentity:
        return cls(str(value["source"]), {str(k): str(v) for k, v in dict(value["files"]).items()})


def model_identity(path: str | Path) -> ModelIdentity:
    """The identity of a model folder, a single model file (GGUF) or a Hub name."""
    p = Path(str(path)).expanduser()
    if p.is_dir():
        return ModelIdentity(str(p), {f.name: file_sha256(f) for f in model_files(p)})
    if p.is_file():
        return ModelIdentity(str(p), {p.name: file_sha256(p)})
    return ModelIdentity(str(path))
