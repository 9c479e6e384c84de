"""The one hash helper: SHA-256 of files (streamed, never a whole file in memory), of JSON-able values, and of
the code that produces a cached artefact. Every content hash of the caches and of a model's identity is made here."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path

BLOCK = 1 << 22  # bytes read at a time: a multi-GB shard is hashed in 4 MiB steps


def file_sha256(path: Path) -> str:
    """SHA-256 (64 hex) of a file's bytes, read block by block."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def value_digest(value, length: int = 16) -> str:
    """SHA-256 of a JSON-able value in canonical form (sorted keys; other types by str), first `length` hex."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@cache
def code_digest(*modules: str) -> str:
    """SHA-256 (16 hex) of the package version and the source of `modules` (dotted names): a cached artefact is
    reused only when the code that produced it is unchanged."""
    from mpu_cli import __version__

    sources = {}
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ImportError(f"cache key: module {name!r} not found")
        sources[name] = file_sha256(Path(spec.origin))
    return value_digest({"version": __version__, "sources": sources})
