"""Which torch device a run uses: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`; and the
CPU model a number was measured on."""
from __future__ import annotations

import re

import torch

ACCEPTED = "'auto', 'cpu', 'cuda', 'cuda:N'"


def pick_device(name: str, key: str = "device") -> torch.device:
    """The device for a setting; ValueError (one line, naming `key`) when it is malformed or absent here."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"{key}={name!r} is not one of [{ACCEPTED}]")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"{key}={name!r} but no CUDA device is available; use {key}=cpu or {key}=auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"{key}={name!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(name)


def batch_to(batch: dict | None, device: torch.device) -> dict | None:
    """A collated batch (a dict of tensors, possibly nested) on `device`."""
    if batch is None:
        return None
    return {k: batch_to(v, device) if isinstance(v, dict) else v.to(device) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor name elsewhere): numbers made on the
    machine depend on it."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
