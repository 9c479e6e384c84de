"""`runner.parallel_copies=N`: which way the copies of a round run in parallel, and the in-process (CPU) way —
N forked worker processes of the run.

Forking after the models are loaded costs milliseconds where a fresh Python + torch process costs seconds, so on
a small model the parallel run is actually faster than the sequential one (the file transport's separate
`mpu-client` processes remain for GPUs, where CUDA forbids fork, and for transport=files). Each worker gets
max(1, threads // N) torch threads (the cores split between slots) and does one copy at a time; the task's
result (timings) comes back to the parent, the returned copy itself goes to its checkpoint file.

A worker killed outright (OOM killer, MPU_KILL_AT) breaks the pool: the parent gets an error instead of hanging.
SIGINT / SIGTERM are the parent's (run/signals.py): it ends the workers and stops with one line.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mpu_cli.config import Launcher, Transport
from mpu_cli.run import signals

_TASK: Callable[[int], dict] | None = None  # set before the workers fork; they inherit it


def _init_worker(threads: int) -> None:
    import signal

    import torch

    # A stop signal is the parent's to act on (one line and the resume hint): a worker ignores Ctrl-C, which
    # reaches the whole process group, and ends at SIGTERM (the parent's, when it stops), with no traceback.
    # Both were held back while the worker was forked (run_in_slots): one sent meanwhile is acted on here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.STOP)
    torch.set_num_threads(threads)  # one thread: no OpenMP team inherited across fork is ever used


def _run(k: int) -> dict:
    return _TASK(k)


def forked_slots(cfg) -> int:
    """runner.parallel_copies for the in-process runner: forked CPU workers; 1 = sequential."""
    return 1 if uses_file_transport(cfg) else cfg.runner.parallel_copies


def as_cluster_jobs(cfg) -> bool:
    """runner.launcher=submitit: each copy one cluster job (run/jobs.py), over the files transport."""
    return cfg.runner.launcher == Launcher.submitit


def _needs_client_processes(cfg) -> bool:
    """Parallel copies on a GPU (CUDA forbids fork; each slot gets its own CUDA_VISIBLE_DEVICES) or under
    accelerate go through separate `mpu-client` processes."""
    from mpu_cli.devices import pick_device
    from mpu_cli.unlearn import accel

    if cfg.runner.parallel_copies <= 1:
        return False
    return pick_device(cfg.client.device).type != "cpu" or accel.wanted(cfg.client)


def uses_file_transport(cfg) -> bool:
    """transport=files, copies as cluster jobs, or parallel copies that need separate client processes."""
    return cfg.transport == Transport.files or as_cluster_jobs(cfg) or _needs_client_processes(cfg)


def slot_threads(n_slots: int) -> int:
    """Torch threads per parallel slot: the cores split between the slots."""
    import torch

    return max(1, torch.get_num_threads() // n_slots)


def run_in_slots(task: Callable[[int], dict], ks: Iterable[int], n_slots: int) -> list[dict]:
    """task(k) for every k, at most n_slots at a time, each in a forked worker; results in the order of ks."""
    global _TASK
    ks = list(ks)
    if not ks:
        return []
    _TASK = task
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(n_slots, len(ks)), mp_context=ctx,
                                 initializer=_init_worker, initargs=(slot_threads(n_slots),)) as pool:
            try:
                with signals.held_back():  # the workers are forked by the first submission
                    results = pool.map(_run, ks)
                return list(results)
            except BaseException:  # a stop signal (or an error): the copies in flight are not waited for
                _stop(pool)
                raise
    except BrokenProcessPool as e:
        signals.check()  # a worker ended by a stop signal sent to the whole group: the signal is the news
        raise RuntimeError(f"a parallel client slot died (killed or out of memory) while unlearning copies {ks}; "
                           f"rerun with resume=true to redo only the copies not returned") from e
    finally:
        _TASK = None


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the workers now (SIGTERM): a copy they return later would not be aggregated by this run anyway, and a
    resumed run redoes only the copies whose checkpoint is missing."""
    for proc in list((pool._processes or {}).values()):  # (the executor has no public way to end its workers)
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
