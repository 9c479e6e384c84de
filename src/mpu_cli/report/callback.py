"""Hydra callback (conf/config.yaml: hydra.callbacks.summary): when a sweep ends, write summary.csv,
paired.csv, summary.md and the plots into the sweep directory. It also runs when jobs failed: mpu-run records
a failed job (its FAILED file) and goes on with the others, and the summary lists it."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

# Jobs of this process's sweep that failed: (job folder, error line), appended by mpu-run as each fails. The
# summary lists every one, also a job that left no run folder behind.
FAILED_JOBS: list[tuple[str, str]] = []


class SweepSummary(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from mpu_cli.report.tables import write_summary

            col = write_summary(sweep_dir, plots=self.plots, failed=FAILED_JOBS)
        except Exception as e:  # a report failure must not turn a finished sweep into a failed one
            log.warning(
                "could not write the sweep summary in %s: %s: %s (run `mpu-report %s`)",
                sweep_dir,
                type(e).__name__,
                e,
                sweep_dir,
            )
            return
        log.info(
            "sweep summary: %d finished, %d failed, %d unfinished run(s) -> %s",
            len(col.finished),
            len(col.failed),
            len(col.unfinished),
            sweep_dir / "summary.md",
        )
