"""The prepare stage caches base/target/retain by a content hash: reused when equal, rebuilt when not."""
import json
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import DataConfig, ModelConfig, PrepareSettings
from mpu_cli.cache import MARKER as COMPLETE
from mpu_cli.models.prepare import prepare_models

import pytest

pytestmark = pytest.mark.integration  # real processes / the prepared models


def _prepare(cache, **over):
    prep = OmegaConf.structured(PrepareSettings(cache_dir=str(cache), base_epochs=1, target_max_epochs=1, **over))
    data = OmegaConf.structured(DataConfig(split="forget01"))
    return prepare_models(OmegaConf.structured(ModelConfig()), data, prep)


def test_cache_is_reused_when_inputs_are_equal_and_rebuilt_when_not(tmp_path):
    first = _prepare(tmp_path)
    for path in (first.base, first.target, first.retain):
        assert (Path(path) / COMPLETE).exists()
        assert (Path(path) / "model.safetensors").exists()
    stamp = (Path(first.target) / COMPLETE).stat().st_mtime_ns

    again = _prepare(tmp_path)
    assert again == first
    assert (Path(again.target) / COMPLETE).stat().st_mtime_ns == stamp  # not rebuilt

    changed = _prepare(tmp_path, lr=1e-3)
    assert changed.base != first.base and changed.target != first.target
    info = json.loads((Path(changed.target) / COMPLETE).read_text())
    assert info["key"]["lr"] == 1e-3


def test_half_built_folder_is_not_reused(tmp_path):
    first = _prepare(tmp_path)
    (Path(first.retain) / COMPLETE).unlink()  # as if killed before the marker
    again = _prepare(tmp_path)
    assert again.retain == first.retain and (Path(again.retain) / COMPLETE).exists()
