"""SIGINT / SIGTERM in mpu-run: recorded when they arrive and acted on, never lost (standard library only:
installed in mpu-run's first lines).

The handler records the signal and raises `Interrupted`, which stops the run with one line and the resume hint.
A child is forked with both signals held back (`held_back`): a signal that reaches mpu-run meanwhile is acted
on as soon as the child is started, and one that reaches the child before it becomes its program (it still
looks like mpu-run then) is passed on to mpu-run (`child_setup`). `check()` is a safe point that acts on a
signal whose exception was swallowed on its way.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager

STOP = {signal.SIGINT, signal.SIGTERM}


class Interrupted(BaseException):
    """SIGINT / SIGTERM: not an error of the run; it stops with one line and the resume hint."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.name = signal.Signals(signum).name
        self.code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


_received: list[int] = []


def _on_signal(signum, _frame) -> None:
    _received.append(signum)
    if len(_received) == 1:  # a second one (Ctrl-C pressed twice) must not break the first one's clean-up
        raise Interrupted(signum)


def install() -> None:
    for s in STOP:
        signal.signal(s, _on_signal)


def check() -> None:
    """A safe point: stop here for a signal received earlier whose Interrupted did not reach the top."""
    if _received:
        raise Interrupted(_received[0])


@contextmanager
def held_back():
    """SIGINT / SIGTERM blocked while this process forks a child; delivered (and acted on) when it returns."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def child_setup() -> None:
    """In a child forked under `held_back`, before it executes its program: a stop signal already sent to it is
    passed on to mpu-run (its parent), then the program starts with the default handling of both."""
    for s in STOP & signal.sigpending():
        os.kill(os.getppid(), s)
    for s in STOP:
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP)
