"""RUN/.hydra/: config.yaml, hydra.yaml and overrides.yaml as Hydra writes them, but with the seed as its public
tag (run/seed_tag.py): mpu-run turns Hydra's own copy off (hydra.output_subdir: null in conf/config.yaml) and
writes this one when a job starts, so no readable file ever holds the seed."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.files import atomic_write_text
from mpu_cli.run import seed_tag

FOLDER = ".hydra"


def write(cfg, hydra_cfg, out: Path) -> None:
    """The job's record: `cfg` its configuration, `hydra_cfg` Hydra's own node (HydraConfig.get())."""
    cache = cfg.prepare.cache_dir
    task = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    task["seed"] = seed_tag.tag(cfg.seed, cache)
    hydra = OmegaConf.to_container(hydra_cfg, resolve=False, enum_to_str=True)
    overrides = [seed_tag.public_override(o, cache) for o in hydra_cfg.overrides.task]
    hydra["overrides"]["task"] = overrides
    job = hydra.get("job") or {}
    if isinstance(job.get("override_dirname"), str):
        job["override_dirname"] = seed_tag.public_override(job["override_dirname"], cache)
    params = (hydra.get("sweeper") or {}).get("params") or {}
    if params.get("seed") is not None:  # the sweep's list of seeds
        params["seed"] = ",".join(seed_tag.public_value(v, cache) for v in str(params["seed"]).split(","))
    folder = Path(out) / FOLDER
    for name, node in (("config.yaml", task), ("hydra.yaml", {"hydra": hydra}), ("overrides.yaml", overrides)):
        atomic_write_text(folder / name, OmegaConf.to_yaml(OmegaConf.create(node)))
