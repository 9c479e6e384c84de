"""Every shipped config composes: each option of each config group alone, and every job of every reproduction grid
(expanded as Hydra's basic sweeper expands it, composed, never run)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose

from helpers import CONFIG_GROUPS as GROUPS
from helpers import group_options as _options
from mpu_cli.config import CONF_DIR

CONF = Path(CONF_DIR)


def test_every_group_has_options():
    assert all(_options(g) for g in GROUPS)
    assert {p.name for p in CONF.iterdir() if p.is_dir()} >= set(GROUPS)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group_configs, group, option):
    cfg = group_configs[group, option]
    assert cfg.model.name and cfg.algorithm.name and cfg.data.split
    if group == "variant":  # a variant sets the arm and its noise level
        assert cfg.arm and cfg.kappa >= 0
    if group == "launcher":  # a launcher preset makes each copy a cluster job
        assert cfg.runner.launcher == "submitit" and cfg.runner.submitit.cluster == option.removeprefix("submitit_")


def test_eval_config_composes_with_every_model_and_data(hydra_conf):
    # every model and every data option, in as few compositions as the longer list (not all their pairs)
    models, datas = _options("model"), _options("data")
    for i in range(max(len(models), len(datas))):
        model, data = models[i % len(models)], datas[i % len(datas)]
        cfg = compose("eval", overrides=[f"model={model}", f"data={data}", "model_path=target"])
        assert cfg.model_path == "target"


