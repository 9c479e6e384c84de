"""The embedded default's public base ships in the package: used when a run asks for its recipe, verified by
its content hash, and replaced by a built one for any other recipe or when damaged."""
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mpu_cli.cache import damaged
from mpu_cli.config import CONF_DIR, register_configs
from mpu_cli.digest import file_sha256
from mpu_cli.models import prepare
from mpu_cli.models.tiny import SHIPPED_BASE
from mpu_cli.run.settings import chat_format


def _default(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return prepare.embedded_base_recipe(cfg.data, cfg.prepare, chat_format(cfg.model)), cfg


def test_the_default_recipe_is_the_shipped_one():
    """Fails when the default pretraining settings, corpus or tokenizer change without
    `python scripts/make_embedded_base.py`: every run would then pretrain its own base."""
    recipe, _ = _default()
    assert prepare.shipped_base(recipe) == SHIPPED_BASE
    assert damaged(SHIPPED_BASE, prepare.SHIPPED_RECIPE) is None  # every file as recorded when it was made
    assert (SHIPPED_BASE / "model.safetensors").stat().st_size > 1_000_000


def test_another_recipe_does_not_use_the_shipped_base():
    recipe, _ = _default("prepare.base_epochs=3")
    assert recipe["epochs"] == 3 and prepare.shipped_base(recipe) is None


def test_a_damaged_shipped_base_is_not_used(tmp_path, monkeypatch, caplog):
    copy = tmp_path / "embedded_base"
    shutil.copytree(SHIPPED_BASE, copy)
    monkeypatch.setattr(prepare, "SHIPPED_BASE", copy)
    recipe, _ = _default()
    assert prepare.shipped_base(recipe) == copy
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:-32] = bytes(32)  # part of one tensor zeroed: the file still loads
    weights.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        assert prepare.shipped_base(recipe) is None
    assert "is damaged" in caplog.text


@pytest.mark.slow
def test_pretraining_again_gives_the_shipped_weights(tmp_path):
    """The shipped bytes are what the current code pretrains (one thread, as the script does)."""
    import torch

    from mpu_cli.models.tiny import load_embedded_tokenizer

    recipe, cfg = _default()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepare.build_embedded_base(load_embedded_tokenizer(), cfg.data, cfg.prepare, chat_format(cfg.model),
                                    Path(tmp_path) / "base")
    finally:
        torch.set_num_threads(threads)
    made = json.loads((SHIPPED_BASE / prepare.SHIPPED_RECIPE).read_text())
    assert file_sha256(tmp_path / "base" / "model.safetensors") == made["files"]["model.safetensors"]
