"""Copies as cluster jobs (run/jobs.py), the parts that need no cluster: runner.submitit becomes the sbatch options
of each copy's job, the job's program, the environment it inherits, and the checks before a run starts. (The jobs
themselves run in tests/integration/test_cluster_jobs.py, through submitit's local executor.)"""
import os
import stat

import pytest
from omegaconf import OmegaConf

from mpu_cli.config import MPUConfig
from mpu_cli.options import ConfigError
from mpu_cli.run import jobs
from mpu_cli.run.checks import validate


def _cfg(**submitit):
    cfg = OmegaConf.structured(MPUConfig)
    cfg.runner.launcher = "submitit"
    for k, v in submitit.items():
        cfg.runner.submitit[k] = v
    return cfg


@pytest.fixture
def slurm_commands(tmp_path, monkeypatch):
    """`srun` and `sbatch` on PATH (never run: only their presence is looked up)."""
    for name in ("srun", "sbatch"):
        p = tmp_path / name
        p.write_text("#!/bin/sh\nexit 1\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_each_copy_job_asks_slurm_for_the_configured_resources(tmp_path, slurm_commands):
    cfg = _cfg(cluster="slurm", partition="gpu", account="proj", qos="high", timeout_min=240, gpus_per_copy=2,
               cpus_per_copy=16, mem_gb=128, setup=["module load cuda"], additional={"constraint": "a100"})
    ex_ = jobs.executor(cfg.runner.submitit, tmp_path / "jobs")
    ex_.update_parameters(name="mpu-r1-copy2")
    text = ex_._executor._make_submission_file_text("CMD", "uid")
    for option in ("--partition=gpu", "--account=proj", "--qos=high", "--time=240", "--gpus-per-node=2",
                   "--cpus-per-task=16", "--mem=128GB", "--constraint=a100", "--job-name=mpu-r1-copy2",
                   "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {option}\n" in text, option
    assert "--error" not in text  # one log per job: stderr goes with stdout
    assert text.index("module load cuda") < text.index("CMD")


def test_unset_resources_are_left_to_the_cluster(tmp_path, slurm_commands):
    text = jobs.executor(_cfg(cluster="slurm").runner.submitit, tmp_path)._executor._make_submission_file_text("C", "u")
    for option in ("--partition", "--account", "--qos", "--mem", "--cpus-per-task", "--constraint"):
        assert f"#SBATCH {option}" not in text, option


def test_the_job_runs_the_client_or_the_client_under_accelerate_launch():
    cfg = _cfg()
    plain = jobs.client_prefix(cfg.client, 4)
    assert plain[-1].endswith("mpu-client") or plain[-2:] == ["-m", jobs.CLIENT_MODULE]
    cfg.client.accelerate_config = "fsdp"
    launch = jobs.client_prefix(cfg.client, 4)
    i = launch.index("launch")
    assert launch[i + 1] == "--config_file" and launch[i + 2].endswith("accelerate_configs/fsdp.yaml")
    assert launch[i + 3:] == ["--num_processes", "4", "-m", jobs.CLIENT_MODULE]
    assert "--num_processes" not in jobs.client_prefix(cfg.client, 0)  # 0 GPUs: the config's own number


def test_jobs_inherit_no_server_only_variable(monkeypatch):
    monkeypatch.setenv("MPU_CACHE_DIR", "/private/cache")
    with jobs._without_server_env():
        assert "MPU_CACHE_DIR" not in os.environ
    assert os.environ["MPU_CACHE_DIR"] == "/private/cache"


def test_slurm_without_sbatch_is_refused_before_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"runner.submitit.cluster=slurm: `sbatch` is not on this machine's PATH"):
        validate(_cfg(cluster="slurm"))
    validate(_cfg(cluster="local"))
