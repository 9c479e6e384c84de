"""Progress reporting: a tqdm bar on a terminal, plain log lines anywhere else (pipes, files, CI logs).

Drop-in for the subset of ``tqdm`` the package uses: ``tqdm(iterable | total=..., desc=, unit=, leave=,
disable=, file=)``, iteration, ``update``, ``set_postfix``, ``close`` and use as a context manager.

``disable=None`` means "automatic" as in tqdm, except that off a terminal it logs instead of going silent;
``disable=True`` turns progress off. ``MPU_PROGRESS=bar|log|off`` forces one mode. Off a terminal a line is
logged (logger ``mpu_cli.progress``, INFO) at most every ``MPU_PROGRESS_INTERVAL`` seconds (default 5) and
once when the loop ends, e.g. ``round 1/1 copy 2/2: 5/5 epoch in 3.1 s (loss=0.412)``.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("mpu_cli.progress")


def _mode(file, disable) -> str:
    if disable is True:
        return "off"
    forced = os.environ.get("MPU_PROGRESS", "").strip().lower()
    if forced in ("bar", "log", "off"):
        return forced
    try:
        tty = (file or sys.stderr).isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty else "log"


def tqdm(
    iterable=None,
    desc: str | None = None,
    total: int | None = None,
    disable: bool | None = False,
    file=None,
    unit: str = "it",
    leave: bool = True,
    **kwargs,
):
    mode = _mode(file, disable)
    if mode == "log":
        return LogProgress(iterable, desc=desc, total=total, unit=unit)
    from tqdm.auto import tqdm as _tqdm

    return _tqdm(
        iterable, desc=desc, total=total, disable=mode == "off", file=file, unit=unit, leave=leave, **kwargs
    )


class LogProgress:
    """tqdm's interface, reporting by log lines: throttled while running, one line at the end."""

    def __init__(
        self,
        iterable=None,
        desc: str | None = None,
        total: int | None = None,
        unit: str = "it",
        interval: float | None = None,
    ):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.n = 0
        self.postfix = ""
        self.interval = float(os.environ.get("MPU_PROGRESS_INTERVAL", "5")) if interval is None else interval
        self.start = self.last = time.perf_counter()
        self.closed = False

    # -- tqdm interface -------------------------------------------------------------------------------
    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self):
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval and (self.total is None or self.n < self.total):
            self.last = now
            self._emit(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def refresh(self) -> None:  # nothing to redraw
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._emit(time.perf_counter(), done=True)

    # -------------------------------------------------------------------------------------------------
    def _emit(self, now: float, done: bool = False) -> None:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        verb = "in" if done else "after"
        line = f"{self.desc}: {count} {self.unit} {verb} {now - self.start:.1f} s"
        if self.postfix:
            line += f" ({self.postfix})"
        log.info(line)
