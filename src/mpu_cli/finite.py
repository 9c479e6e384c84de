"""Non-finite numbers stop a run: a NaN / Inf loss, update or weight is an error, never a result.

Both parties use these checks (the client on its loss and the weights it returns, the server on the copies
it receives and the weights it aggregates), so the module imports neither side.
"""
from __future__ import annotations

import math

import torch


class NonFiniteError(RuntimeError):
    """A loss, update or weight became NaN or infinite; the message names where (round, copy, tensor)."""


def _kind(t: torch.Tensor) -> str:
    return "nan" if bool(torch.isnan(t).any()) else "inf"


def check_loss(loss: torch.Tensor, where: str) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError(f"{where}: the unlearning loss is {value} (non-finite); the run is stopped. "
                             "Lower kappa or client.lr, or check the model")


_CHUNK = 1 << 22  # elements checked at once: torch.isfinite makes temporaries larger than the tensor itself


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in `t`. A NaN or infinity makes the sum non-finite, so a finite sum (one pass, no
    temporary) settles it; only a non-finite sum, which finite values can also give by overflowing, is checked
    element by element, a slice at a time (memory of one slice, whatever the tensor's size)."""
    if bool(torch.isfinite(t.sum())):
        return True
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + _CHUNK]).all()) for i in range(0, flat.numel(), _CHUNK))


def check_tensor(name: str, t: torch.Tensor, where: str, what: str = "tensor") -> None:
    if t.is_floating_point() and not all_finite(t):
        raise NonFiniteError(f"{where}: {what} {name!r} holds {_kind(t)} values; the run is stopped")


def check_state(state: dict, where: str, what: str = "tensor") -> None:
    """The first non-finite tensor of a state dict, by name."""
    for name, t in state.items():
        check_tensor(name, t, where, what)
