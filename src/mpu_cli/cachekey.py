"""Code versions for cache keys: a cached artefact (prepared model, fixed-model evaluation) is reused only when
both its inputs and the code that produced it are unchanged."""
from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path


@cache
def code_digest(*modules: str) -> str:
    """SHA-256 (16 hex) of the package version and the source of `modules` (dotted names)."""
    from mpu_cli import __version__

    h = hashlib.sha256(__version__.encode())
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ImportError(f"cache key: module {name!r} not found")
        h.update(name.encode())
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()[:16]
