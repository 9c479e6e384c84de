"""The seed's public tag (run/seed_tag.py): equal seeds, equal tags; the seed itself in no readable record."""
from __future__ import annotations

import json
import stat

import pytest
from omegaconf import OmegaConf

from mpu_cli.config import ConfigError, MPUConfig
from mpu_cli.run import rundir, seed_tag


def test_tags_pair_equal_seeds_and_tell_nothing_of_them(tmp_path):
    a, b = seed_tag.tag(7, tmp_path), seed_tag.tag("7", tmp_path)
    assert a == b and a.startswith(seed_tag.PREFIX) and len(a) == len(seed_tag.PREFIX) + 12
    assert seed_tag.tag(8, tmp_path) != a
    assert seed_tag.tag(None, tmp_path) is None
    key = tmp_path / seed_tag.KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # another user's key (another cache) gives other tags: the tag is keyed, not a plain hash of the seed
    assert seed_tag.tag(7, tmp_path / "other") != a
    assert seed_tag.tag(a, tmp_path) == a  # a recorded tag stays itself


@pytest.mark.parametrize("text, want", [
    ("seed=7", "seed=T7"), ("+seed=7", "+seed=T7"), ("++seed=7", "++seed=T7"), ("seed=null", "seed=null"),
    ("client.seed=7", "client.seed=7"), ("prepare.seed=7", "prepare.seed=7"),
    ("kappa=0.1,seed=7,client.seed=7", "kappa=0.1,seed=T7,client.seed=7"),
])
def test_overrides_carry_the_tag(tmp_path, text, want):
    assert seed_tag.public_override(text, tmp_path) == want.replace("T7", seed_tag.tag(7, tmp_path))


def _cfg(tmp_path, seed):
    return OmegaConf.merge(OmegaConf.structured(MPUConfig),
                           OmegaConf.from_dotlist([f"seed={seed}", f"prepare.cache_dir={tmp_path / 'cache'}"]))


def test_run_json_records_the_tag_and_resume_still_tells_seeds_apart(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rundir.start(_cfg(tmp_path, 123457), run, "fresh")
    text = (run / "run.json").read_text()
    assert "123457" not in text
    assert json.loads(text)["config"]["seed"] == seed_tag.tag(123457, tmp_path / "cache")
    assert rundir.check(OmegaConf.merge(_cfg(tmp_path, 123457), {"resume": True}), run) == "resume"
    with pytest.raises(ConfigError, match="another configuration: seed="):
        rundir.check(OmegaConf.merge(_cfg(tmp_path, 123458), {"resume": True}), run)


def test_a_run_recorded_with_its_plain_seed_still_resumes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(tmp_path, 5)
    (run / "run.json").write_text(json.dumps({"config": rundir.run_config(cfg)}))
    assert rundir.check(OmegaConf.merge(cfg, {"resume": True}), run) == "resume"


def test_a_cache_that_cannot_keep_the_key_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="prepare.cache_dir=.* is not writable .*the key of the seed's tag"):
        seed_tag.tag(1, tmp_path / "file" / "cache")


def test_the_hydra_record_holds_the_tag_not_the_seed(tmp_path, monkeypatch):
    """.hydra/ as mpu-run writes it (run/hydra_record.py) for a job of a reproduce sweep, whose sweeper lists
    the seeds: config, overrides, Hydra's own node (override_dirname, sweeper params) carry tags only."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from mpu_cli.config import CONF_DIR, register_configs
    from mpu_cli.run import hydra_record

    monkeypatch.setenv("MPU_CACHE_DIR", str(tmp_path / "cache"))
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="reproduce_m", overrides=["seed=987654"],
                      return_hydra_config=True)
    hydra_cfg = cfg.hydra
    with open_dict(hydra_cfg):
        hydra_cfg.overrides.task = ["seed=987654", "client.seed=3"]
        hydra_cfg.job.override_dirname = "client.seed=3,seed=987654"
        hydra_cfg.sweeper.params.seed = "987654,987655"
    with open_dict(cfg):
        del cfg["hydra"]
    hydra_record.write(cfg, hydra_cfg, tmp_path / "run")
    texts = {p.name: p.read_text() for p in (tmp_path / "run" / ".hydra").iterdir()}
    assert sorted(texts) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert not [name for name, text in texts.items() if "98765" in text], texts
    tag = seed_tag.tag(987654, tmp_path / "cache")
    assert OmegaConf.load(tmp_path / "run" / ".hydra" / "overrides.yaml") == [f"seed={tag}", "client.seed=3"]
    assert OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").seed == tag


def _reproduce(tmp_path, monkeypatch, seed):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    monkeypatch.setenv("MPU_CACHE_DIR", str(tmp_path / "cache"))
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="reproduce_m", overrides=[f"seed={seed}"])


def test_a_reproduce_sweeps_client_seed_follows_the_seed_and_tells_nothing_of_it(tmp_path, monkeypatch):
    """The client's seed in a reproduce sweep: a keyed integer of the seed, so CLIENT.json (which the client
    reads), run.json and results.csv hold no plain seed; equal seeds, equal client seeds."""
    from mpu_cli.run.pipeline import result_row
    from mpu_cli.run.settings import client_settings

    cfg = _reproduce(tmp_path, monkeypatch, 987654)
    client_json = json.dumps(client_settings(cfg))
    assert "987654" not in client_json
    assert json.loads(client_json)["client"]["seed"] == seed_tag.client_seed(987654, tmp_path / "cache")
    assert seed_tag.client_seed(987654, tmp_path / "cache") == seed_tag.client_seed("987654", tmp_path / "cache")
    assert cfg.client.seed != _reproduce(tmp_path, monkeypatch, 987655).client.seed
    assert cfg.client.seed != seed_tag.client_seed(987654, tmp_path / "other")  # keyed: another cache, another
    row = result_row(cfg, {}, {}, "hash")
    assert "987654" not in json.dumps(row, default=str) and row["client.seed"] == cfg.client.seed
    run = tmp_path / "run"
    run.mkdir()
    rundir.start(cfg, run, "fresh")
    assert "987654" not in (run / "run.json").read_text()
