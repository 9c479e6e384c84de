"""Every shipped config composes: each option of each config group alone, and every job of every reproduction grid
(expanded as Hydra's basic sweeper expands it, composed, never run)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from mpu_cli.config import CONF_DIR

CONF = Path(CONF_DIR)


REPRODUCE = sorted(p.stem for p in CONF.glob("reproduce_*.yaml") if p.stem != "reproduce_base")


def _jobs(config_name: str) -> list[list[str]]:
    params = compose(config_name, return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return BasicSweeper.split_arguments(parsed, None)[0]


@pytest.mark.integration  # ~500 compositions: too slow for the unit layer
@pytest.mark.parametrize("config_name", REPRODUCE)
def test_every_job_of_every_reproduction_grid_composes(hydra_conf, config_name):
    jobs = _jobs(config_name)
    assert jobs, f"{config_name} has no sweep grid"
    names = set()
    for job in jobs:
        cfg = compose(config_name, overrides=job)
        names.add(tuple(job))
        assert cfg.seed is not None, f"{config_name} job {job}: a reproduction run must be seeded"
    assert len(names) == len(jobs), f"{config_name}: two jobs with the same overrides"

