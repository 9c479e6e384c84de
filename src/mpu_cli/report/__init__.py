"""Run and sweep tables (pandas) and plots (matplotlib, Agg): `mpu-report DIR`, and a Hydra callback that
writes the summary when a sweep ends."""

from mpu_cli.report.tables import add_degradation, collect, relative_degradation, write_summary

__all__ = ["add_degradation", "collect", "relative_degradation", "write_summary"]
