"""Fault injection for the reliability tests. Both hooks do nothing unless their variable is set.

``MPU_KILL_AT=<point>``: the process SIGKILLs itself when it reaches that point (no cleanup, no atexit), as a
pre-emption or an out-of-memory kill would. Points of `mpu-run` (r: round, k: copy, both counted from 1):
``before_start`` (inputs checked and models prepared, run.json not yet written), ``after_prepare``, ``after_target_eval``, ``round<r>_after_publish``, ``round<r>_copy<k>_mid`` (inside the client
loop, after the first optimizer step), ``round<r>_copy<k>_done``, ``round<r>_before_aggregate``,
``round<r>_mid_aggregate`` (half the tensors aggregated), ``round<r>_after_aggregate`` (θ_r committed),
``final_eval_mid`` (inside the final evaluation, after its first data split), ``before_complete`` (results
written, completion marker not yet), ``fork`` (transport=files: in each child process of mpu-run between its fork
and its exec, where it still looks like mpu-run).

``MPU_KILL_SIGNAL=INT|TERM`` sends that signal instead (as Ctrl-C or a scheduler's pre-emption notice would):
the run then stops with one line and the resume hint.

``MPU_FAULT_INJECT=<op>[@<output>]:<ERRNO>[,...]``: the write operation ``op`` raises ``OSError(ERRNO)`` before
writing, as a full disk would (e.g. ``save_tensors:ENOSPC``). Ops: ``atomic_write`` (JSON / text files),
``save_tensors`` (safetensors checkpoints of a run), ``save_model`` (model folders), ``*`` (every one).
``@<output>`` limits it to the writes of one output, named by its file name or its last path parts
(``atomic_write@results.csv:ENOSPC``, ``atomic_write@target/TOFU_EVAL.json:ENOSPC``), so that each writing stage
of a run can be failed on its own.
"""
from __future__ import annotations

import errno
import os
import signal
import sys

KILL_ENV = "MPU_KILL_AT"
SIGNAL_ENV = "MPU_KILL_SIGNAL"
INJECT_ENV = "MPU_FAULT_INJECT"

# The point of the current client loop (set by the runner, read inside the loop): "round1_copy1".
_current: dict[str, str] = {}


def kill_point(name: str) -> None:
    want = os.environ.get(KILL_ENV)
    if want and want == name:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(SIGNAL_ENV, "KILL").upper()))


def set_scope(scope: str | None) -> None:
    """Name the unit of work now running (e.g. "round1_copy2"); `scoped_kill_point("mid")` then reads
    round1_copy2_mid. Keeps code that must not know rounds (the client loop) free of them."""
    if scope is None:
        _current.pop("scope", None)
    else:
        _current["scope"] = scope


def scoped_kill_point(suffix: str) -> None:
    scope = _current.get("scope")
    if scope and os.environ.get(KILL_ENV):
        kill_point(f"{scope}_{suffix}")


def inject(op: str, path=None) -> None:
    """Raise the OSError configured for `op` (and, where the item names one, this path) in MPU_FAULT_INJECT."""
    spec = os.environ.get(INJECT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        target, _, code = item.strip().partition(":")
        target, _, where = target.partition("@")
        if target in (op, "*") and (not where or _names(path, where)):
            num = getattr(errno, code.strip() or "ENOSPC", None)
            if not isinstance(num, int):
                num = errno.ENOSPC
            raise OSError(num, f"{os.strerror(num)} (injected by {INJECT_ENV}={spec})",
                          None if path is None else str(path))


def _names(path, where: str) -> bool:
    """`path` is the output `where` names: its file name, or its last parts (``target/TOFU_EVAL.json``)."""
    if path is None:
        return False
    text = str(path).replace(os.sep, "/")
    return text == where or text.endswith("/" + where.strip("/"))
