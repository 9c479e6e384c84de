"""`make reproduce-smollm2`'s sweep (conf/reproduce_smollm2.yaml): it composes and validates, its grid has 20 runs,
and its prepare preset is open-unlearning's target schedule (lr 1e-5, 5 epochs) — checked without running it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf
from test_eval_cli import needs_smollm2

from mpu_cli.config import CONF_DIR

REPO = Path(__file__).resolve().parents[2]


def _write_subset(out: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tofu_subset.py"), str(out)], check=True,
                   capture_output=True, timeout=300)


def test_grid_has_20_runs_of_the_stated_arms():
    params = OmegaConf.load(f"{CONF_DIR}/reproduce_smollm2.yaml").hydra.sweeper.params
    grid = {k: str(v).split(",") for k, v in params.items()}
    assert grid == {"algorithm": ["npo", "graddiff"],
                    "variant": ["clean", "noised_k0.1", "mpu_k0.1", "noised_k1", "mpu_k1"], "seed": ["0", "1"]}
    assert len(grid["algorithm"]) * len(grid["variant"]) * len(grid["seed"]) == 20


@needs_smollm2
def test_the_sweep_composes_and_validates(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import register_configs

    monkeypatch.chdir(tmp_path)  # data.source is relative to where `make` runs: the subset the target writes
    _write_subset(tmp_path / "outputs" / "data" / "embedded-subset")
    grid = {k: str(v).split(",") for k, v in
            OmegaConf.load(f"{CONF_DIR}/reproduce_smollm2.yaml").hydra.sweeper.params.items()}
    for key, values in grid.items():  # every option once (composing all 20 jobs takes a while)
        others = [f"{k}={v[0]}" for k, v in grid.items() if k != key]
        assert check_overrides([*others, f"{key}={','.join(values)}"], CONF_DIR, "reproduce_smollm2",
                               multirun=True) == len(values)
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="reproduce_smollm2", overrides=["variant=mpu_k1", "algorithm=graddiff"])
    assert (cfg.model.name, cfg.arm, cfg.kappa, cfg.m, cfg.data.source) == (
        "smollm2-135m", "mpu", 1.0, 2, "outputs/data/embedded-subset")
    assert (cfg.prepare.lr, cfg.prepare.target_max_epochs, cfg.eval.metrics) == (1e-5, 5, "quick")
