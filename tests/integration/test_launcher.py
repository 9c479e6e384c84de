"""Clusters: the shipped `hydra/launcher=slurm` config fits the released hydra-submitit-launcher, and a sweep
through `hydra/launcher=submitit_local` (the same plugin, jobs as local processes) completes."""
import dataclasses
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mpu_cli.config import CONF_DIR

pytestmark = pytest.mark.integration  # real processes / the prepared models

FAST = ["algorithm=ga", "client.epochs=1", "eval.metrics=quick", "eval.max_new_tokens=8", "data.split=forget01",
        "seed=0"]


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import register_configs

    register_configs()  # the schema the root config's defaults list names
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_launcher"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_slurm_launcher_config_uses_only_fields_of_the_released_plugin():
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    shipped = yaml.safe_load((Path(CONF_DIR) / "hydra" / "launcher" / "slurm.yaml").read_text())
    fields = {f.name for f in dataclasses.fields(SlurmQueueConf)}
    assert shipped.pop("defaults") == ["submitit_slurm"]
    assert set(shipped) <= fields, set(shipped) - fields
    launcher = _compose(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.timeout_min == shipped["timeout_min"] and launcher.gpus_per_node == 1


def test_submitit_local_two_job_sweep_completes(mpu_run_cmd, tmp_path):
    # mpu_run_cmd's session fixture has built the prepared models: the two jobs do not build them side by side
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([*mpu_run_cmd, "-m", "hydra/launcher=submitit_local", "arm=clean,mpu", *FAST,
                           "hydra.launcher.timeout_min=20", f"hydra.sweep.dir={tmp_path}"],
                          check=False, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    results = sorted(tmp_path.glob("*/results.csv"))
    assert len(results) == 2
    rows = pd.concat([pd.read_csv(p) for p in results])
    assert sorted(rows.arm) == ["clean", "mpu"]
    assert set(rows.split) == {"forget01"}
    assert len(list((tmp_path / ".submitit").glob("*/*_result.pkl"))) == 2  # both ran as submitit jobs
