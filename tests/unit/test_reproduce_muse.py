"""`make reproduce-muse-tiny` and `make reproduce-muse`: their grids and that they compose and validate (without
running them)."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mpu_cli.config import CONF_DIR

PAPER_ALGORITHMS = ["ga", "graddiff", "npo", "simnpo", "undial", "satimp", "wga"]
ARMS = ["clean", "noised_k0.1", "mpu_k0.01", "mpu_k0.1"]


def _grid(name: str) -> dict[str, list[str]]:
    return {k: str(v).split(",") for k, v in OmegaConf.load(f"{CONF_DIR}/{name}.yaml").hydra.sweeper.params.items()}


def test_grids_are_the_papers():
    assert _grid("reproduce_muse_tiny") == {"algorithm": PAPER_ALGORITHMS, "variant": ARMS, "seed": ["0"]}
    assert _grid("reproduce_muse") == {"data.source": ["muse-bench/MUSE-News", "muse-bench/MUSE-Books"],
                                       "algorithm": PAPER_ALGORITHMS, "variant": ARMS, "seed": ["0"]}


@pytest.mark.parametrize("name", ["reproduce_muse_tiny", "reproduce_muse"])
def test_the_sweeps_compose(name):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import register_configs
    from mpu_cli.run.checks import validate

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name=name, overrides=["variant=mpu_k0.1", "algorithm=npo"])
    assert (cfg.data.benchmark, cfg.data.split, cfg.data.retain_split, cfg.arm, cfg.kappa) == (
        "muse", "forget", "retain1", "mpu", 0.1)
    if name == "reproduce_muse":
        assert (cfg.model.name, cfg.model.base, cfg.model.target, cfg.model.max_length) == (
            "muse-llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", "finetune", 2048)
        assert (cfg.prepare.lr, cfg.prepare.target_max_epochs, cfg.prepare.target_min_prob) == (1e-5, 10, 1.0)
    else:
        validate(cfg)


@pytest.mark.parametrize("split", ["News", "Books"])
def test_open_unlearning_muse_targets_compose(split):
    """model=muse-<news|books>-llama-2-7b names muse-bench's published target and retrained model."""
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[f"model=muse-{split.lower()}-llama-2-7b", "data=muse",
                                                       f"data.source=muse-bench/MUSE-{split}"])
    assert (cfg.model.target, cfg.model.retain, cfg.model.tokenizer, cfg.model.max_length) == (
        f"muse-bench/MUSE-{split}_target", f"muse-bench/MUSE-{split}_retrain", "meta-llama/Llama-2-7b-hf", 2048)
    assert cfg.data.benchmark == "muse"
