"""Every shipped config composes: each option of each config group alone, and every job of every reproduction grid
(expanded as Hydra's basic sweeper expands it, composed, never run)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from mpu_cli.config import CONF_DIR, register_configs

CONF = Path(CONF_DIR)
# Groups chosen as `group=option` on mpu-run's command line (conf/<group>/<option>.yaml).
GROUPS = ("model", "data", "algorithm", "accelerate", "experiment", "tofu_split", "variant")
REPRODUCE = sorted(p.stem for p in CONF.glob("reproduce_*.yaml") if p.stem != "reproduce_base")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    register_configs()
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_compose"):
        yield


def test_every_group_has_options():
    assert all(_options(g) for g in GROUPS)
    assert {p.name for p in CONF.iterdir() if p.is_dir()} >= set(GROUPS)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(hydra_conf, group, option):
    cfg = compose("config", overrides=[f"{group}={option}"])
    assert cfg.model.name and cfg.algorithm.name and cfg.data.split
    if group == "variant":  # a variant sets the arm and its noise level
        assert cfg.arm and cfg.kappa >= 0


def test_eval_config_composes_with_every_model_and_data(hydra_conf):
    for model in _options("model"):
        for data in _options("data"):
            cfg = compose("eval", overrides=[f"model={model}", f"data={data}", "model_path=target"])
            assert cfg.model_path == "target"


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
