"""Every shipped config composes: each option of each config group alone, and every job of every reproduction grid
(expanded as Hydra's basic sweeper expands it, composed, never run)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose

from mpu_cli.config import CONF_DIR

CONF = Path(CONF_DIR)
# Groups chosen as `group=option` on mpu-run's command line (conf/<group>/<option>.yaml).
GROUPS = ("model", "data", "algorithm", "accelerate", "launcher", "experiment", "tofu_split", "variant")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    assert all(_options(g) for g in GROUPS)
    assert {p.name for p in CONF.iterdir() if p.is_dir()} >= set(GROUPS)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(hydra_conf, group, option):
    cfg = compose("config", overrides=[f"{group}={option}"])
    assert cfg.model.name and cfg.algorithm.name and cfg.data.split
    if group == "variant":  # a variant sets the arm and its noise level
        assert cfg.arm and cfg.kappa >= 0
    if group == "launcher":  # a launcher preset makes each copy a cluster job
        assert cfg.runner.launcher == "submitit" and cfg.runner.submitit.cluster == option.removeprefix("submitit_")


def test_eval_config_composes_with_every_model_and_data(hydra_conf):
    for model in _options("model"):
        for data in _options("data"):
            cfg = compose("eval", overrides=[f"model={model}", f"data={data}", "model_path=target"])
            assert cfg.model_path == "target"


