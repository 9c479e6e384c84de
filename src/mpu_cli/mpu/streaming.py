"""How the server's streaming passes use the machine: one intra-op thread and a heap that keeps freed memory.

A pass over the model (σ's pass, writing the copies, the aggregate) allocates and frees tensor-sized buffers one
tensor after another while a background thread writes files. Measured on this project's 2-core CPU at the
Llama-3.2-1B shape (scripts/bench_server.py):

- glibc hands every allocation above 32 MiB to its own mmap and unmaps it on free, so the next tensor's buffers
  are fresh pages the kernel zeroes first: a fifth of the server's CPU time went to clearing pages. During a pass
  large blocks come from the heap and freed ones stay there for the next tensor; on leaving, what is free is
  handed back (malloc_trim), so the process ends the pass no larger than its peak inside it.
- An OpenMP team of two threads waits at every barrier for a thread the file writer has taken off the core: the
  aggregate ran 1.5x slower with two intra-op threads than with one. The pass's parallelism is its threads
  without a team instead: the m noise streams drawn side by side, the file writer, the hashing of what is read.

Both are process-wide settings, so they hold only inside `streaming_pass()` and are put back on leaving; a
platform without glibc keeps its allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from contextlib import contextmanager

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_KEEP_FREED = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1}  # no block is mapped alone; the top is kept
# on leaving: where glibc's own sliding thresholds settle once a large block was freed (setting any threshold
# stops them sliding), large blocks mapped alone again
_AFTER = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}
_lock = threading.Lock()
_depth = 0  # passes running (nested, or on other threads): the settings change once, for all of them
_threads_outside = 0  # torch's intra-op threads when the first pass running began


def worker_threads() -> int:
    """Threads a pass may run side by side for work without an OpenMP team (independent noise streams): torch's
    intra-op threads as they were outside the pass."""
    return _threads_outside if _depth else torch.get_num_threads()


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


@contextmanager
def streaming_pass():
    """Run a server pass with one intra-op thread and a heap that keeps freed blocks (see the module docstring);
    both as before once the last pass running has left, the free heap returned to the system."""
    global _depth, _threads_outside
    with _lock:
        if _depth == 0:
            _threads_outside = torch.get_num_threads()
            torch.set_num_threads(1)
            _set(_KEEP_FREED)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(_AFTER)
                if _LIBC is not None:
                    _LIBC.malloc_trim(0)
                torch.set_num_threads(_threads_outside)


def _set(options: dict) -> None:
    if _LIBC is None:
        return
    for option, value in options.items():
        _LIBC.mallopt(ctypes.c_int(option), ctypes.c_int(value))


def in_streaming_pass(method):
    """The method run inside `streaming_pass()`."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        with streaming_pass():
            return method(*args, **kwargs)

    return run
