"""Wall time and peak resident memory of each phase of one process.

The peak is the kernel's high-water mark (VmHWM), reset at the start of each phase through /proc/self/clear_refs
(Linux); where that is not available the peak is None and only the time is measured. Before the reset, memory an
earlier phase freed is handed back to the kernel, so a phase's peak is what the process needs from then on."""
from __future__ import annotations

import ctypes
import gc
import logging
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_rss_mb() -> float | None:
    """The process's peak resident memory since the last reset, in MiB (None: not available here)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def release_freed_memory() -> None:
    """Collect garbage and return the C heap's free pages to the kernel (glibc's malloc_trim; elsewhere a no-op):
    the allocator otherwise keeps freed blocks, and the process's resident memory with them."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


class PhaseMeter:
    def __init__(self):
        self.phases: dict[str, dict] = {}

    @contextmanager
    def phase(self, name: str):
        """Measure the block as phase `name` (a name measured twice adds the times, keeps the larger peak)."""
        release_freed_memory()
        reset = _reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            peak = peak_rss_mb() if reset else None
            old = self.phases.get(name, {"seconds": 0.0, "peak_rss_mb": peak})
            peaks = [p for p in (old["peak_rss_mb"], peak) if p is not None]
            self.phases[name] = {"seconds": old["seconds"] + seconds, "peak_rss_mb": max(peaks) if peaks else None}
            log.info("phase %s: %.1f s, peak %s MiB", name, seconds, "?" if peak is None else f"{peak:.0f}")

    def peak(self) -> float | None:
        """The largest peak of all phases measured."""
        peaks = [p["peak_rss_mb"] for p in self.phases.values() if p["peak_rss_mb"] is not None]
        return max(peaks) if peaks else None
