"""The embedded default's public base ships in the package: used when a run asks for its recipe, verified by
its content hash, and replaced by a built one for any other recipe or when damaged."""
import shutil

from helpers import embedded_default
from mpu_cli.cache import damaged
from mpu_cli.models import prepare
from mpu_cli.models.tiny import SHIPPED_BASE


def test_the_default_recipe_is_the_shipped_one():
    """Fails when the default pretraining settings, corpus or tokenizer change without
    `python scripts/make_embedded_base.py`: every run would then pretrain its own base."""
    recipe, _ = embedded_default()
    assert prepare.shipped_base(recipe) == SHIPPED_BASE
    assert damaged(SHIPPED_BASE, prepare.SHIPPED_RECIPE) is None  # every file as recorded when it was made
    assert (SHIPPED_BASE / "model.safetensors").stat().st_size > 1_000_000


def test_another_recipe_does_not_use_the_shipped_base():
    recipe, _ = embedded_default("prepare.base_epochs=3")
    assert recipe["epochs"] == 3 and prepare.shipped_base(recipe) is None


def test_a_damaged_shipped_base_is_not_used(tmp_path, monkeypatch, caplog):
    copy = tmp_path / "embedded_base"
    shutil.copytree(SHIPPED_BASE, copy)
    monkeypatch.setattr(prepare, "SHIPPED_BASE", copy)
    recipe, _ = embedded_default()
    assert prepare.shipped_base(recipe) == copy
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:-32] = bytes(32)  # part of one tensor zeroed: the file still loads
    weights.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        assert prepare.shipped_base(recipe) is None
    assert "is damaged" in caplog.text


