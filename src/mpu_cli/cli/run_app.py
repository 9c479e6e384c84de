"""The Hydra app behind `mpu-run` (cli/run.py starts it): one run, or one job of a sweep, with its errors
turned into one line each."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from pathlib import Path

# The embedded default never needs the Hub; without these a Hub lookup spends ~20 s in retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hydra
from hydra.core.hydra_config import HydraConfig

from mpu_cli.cli.help import register_help
from mpu_cli.config import CONF_DIR, ConfigError, register_configs
from mpu_cli.data.validate import DataError
from mpu_cli.files import DISK_FULL
from mpu_cli.finite import NonFiniteError
from mpu_cli.report.callback import FAILED_JOBS
from mpu_cli.run import runlock, signals
from mpu_cli.run.checks import validate
from mpu_cli.run.signals import Interrupted
from mpu_cli.transport.errors import TransportError
from mpu_cli.unlearn.settings import ReferencePolicy

DISK_ERRORS = (*DISK_FULL, errno.EROFS)

log = logging.getLogger("mpu_cli")

register_configs()
register_help()  # `--help`: ${mpu_help:<config>} in conf/hydra/help/*.yaml


def fail(message: str, code: int = 2) -> None:
    """Bad input (code 2) or a stopped run: one line on stderr."""
    print(f"mpu-run: error: {message}", file=sys.stderr)
    sys.exit(code)


# FAILED_JOBS: the jobs of this process's sweep that failed, (job directory, error line). A failed job does not
# stop the sweep; the sweep's summary lists them, and `start` reports them and exits non-zero once it is done.


def _error_line(e: BaseException) -> tuple[str, int]:
    """The one-line message of a run's error and the exit code it gets: 2 bad input, 1 anything else."""
    if isinstance(e, (ConfigError, FileNotFoundError, DataError, TransportError)):
        return str(e), 2
    if isinstance(e, OSError) and e.errno in DISK_ERRORS:
        # A full disk (or quota, read-only file system): every write is atomic, so nothing partial is left
        # under a final name; the stages already completed are kept for resume=true. A full disk is a fault
        # (exit 1), a read-only place the user named is bad input (exit 2).
        where = f" {e.filename}" if e.filename else ""
        return (f"cannot write{where}: {e.strerror}; nothing partial was kept — free space and rerun with "
                "resume=true (and the same hydra.run.dir / run_id) to continue from the last completed stage"), (
                    1 if e.errno in DISK_FULL else 2)
    if _explained(e):
        return str(e), 1
    return f"{type(e).__name__}: {' '.join(str(e).split())}", 1


def _explained(e: BaseException) -> bool:
    """A fault its one line explains fully (no traceback is logged): a value that became non-finite, a damaged
    server state, a copy job that did not return its copy, a full disk."""
    from mpu_cli.run.copy_job import CopyJobError
    from mpu_cli.run.server_state import ServerStateError

    return isinstance(e, (NonFiniteError, ServerStateError, CopyJobError)) or (
        isinstance(e, OSError) and e.errno in DISK_FULL)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def _run(cfg) -> float | None:
    from hydra.types import RunMode

    from mpu_cli.run import hydra_record, rundir
    from mpu_cli.run.pipeline import run

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    try:
        rundir.lock(out)  # one process per run directory (a single run's is held already, before Hydra wrote)
        hydra_record.write(cfg, hc, out)  # what Hydra would write into .hydra/, the seed as its tag
        validate(cfg)
        if cfg.client.reference == ReferencePolicy.server_clean:
            log.warning("reference=server_clean: the client receives the exact theta_0 (the paper's code; a leak)")
        if not cfg.get("verbose"):
            quiet_libraries()
        row = run(cfg, out)
    except Interrupted as e:
        if out.is_dir():
            with contextlib.suppress(OSError):  # (a full disk: the run stops with its line all the same)
                rundir.write_manifest(out)
        fail(f"interrupted ({e.name}) at {current_stage()}: rerun the same command with resume=true to continue "
             f"from the last completed stage (hydra.run.dir={out})", e.code)
    except Exception as e:
        message, code = _error_line(e)
        started = rundir.mark_failed(out, message)
        if code == 1 and not _explained(e):
            log.exception("the run failed")  # an unexpected error: its traceback goes to the job's log
        if started and (out / rundir.RUN_STATE).exists() and "resume=true" not in message:
            message += f" (the stages completed so far are kept: rerun with resume=true hydra.run.dir={out})"
        if sweep:  # the other jobs go on; the sweep summary lists this one as failed
            log.error("sweep job %s failed: %s", out, message)
            FAILED_JOBS.append((str(out), message))
            return None
        if code == 1 and not _explained(e):
            raise
        fail(message, code)
    finally:
        if sweep:  # the next job of the sweep has its own folder (and holding every job's lock costs a file each)
            runlock.release(out)
    from mpu_cli.cli.summary import end_of_run
    from mpu_cli.evals import benchmarks

    first = benchmarks.of(cfg.data).forget_metric
    if sweep:
        print(f"job done: {out}: {first} {row.get(f'target_{first}', float('nan')):.3f} → "
              f"{row.get(first, float('nan')):.3f}", flush=True)
    else:
        print(end_of_run(out, row), flush=True)
    return row.get(first)


def quiet_libraries() -> None:
    """Hide the libraries' own progress bars and chatter (verbose=true shows them): transformers' "Loading
    weights" bar per model, matplotlib's font cache lines."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    for name in ("matplotlib", "matplotlib.font_manager", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


def current_stage() -> str:
    from mpu_cli.run.stage import current

    return current()


def start(argv: list[str]) -> None:
    """Validate every job of the command line first (nothing written on bad input), then run Hydra."""
    from mpu_cli.cli.precheck import precheck

    try:
        sys.argv += precheck(argv, CONF_DIR, claim_run_dir=True)  # Hydra reads sys.argv itself
        signals.check()  # a safe point: a signal swallowed by a library's import stops the run here, unused
    except ConfigError as e:
        runlock.release_unused()  # a run directory claimed for this command line: given back as it was
        fail(str(e))
    except BaseException:
        runlock.release_unused()
        raise
    try:
        _run()
    except Interrupted as e:  # between sweep jobs, or while Hydra sets a job up
        fail(f"interrupted ({e.name}) at {current_stage()}: rerun the same command with resume=true", e.code)
    if FAILED_JOBS:
        print(f"mpu-run: error: {len(FAILED_JOBS)} sweep job(s) failed (listed in the sweep's summary.md):",
              file=sys.stderr)
        for where, message in FAILED_JOBS:
            print(f"  {where}: {message}", file=sys.stderr)
        sys.exit(1)
