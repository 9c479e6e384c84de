"""mpu-eval's model_path: anything that is not a model we load is refused in one line (exit 2)."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mpu_cli.cli.eval import _model_location
from mpu_cli.config import ConfigError


def _pickle(d: Path) -> Path:
    (d / "w.pkl").write_bytes(pickle.dumps({"w": 1}))
    return d / "w.pkl"


def _text(d: Path) -> Path:
    (d / "notes.txt").write_text("hello")
    return d / "notes.txt"


def _empty(d: Path) -> Path:
    (d / "empty").mkdir()
    return d / "empty"


def _pickled_weights(d: Path) -> Path:
    (d / "old").mkdir()
    (d / "old" / "config.json").write_text("{}")
    (d / "old" / "pytorch_model.bin").write_bytes(b"x")
    return d / "old"


def _run_without_model(d: Path) -> Path:
    (d / "run").mkdir()
    (d / "run" / "run.json").write_text("{}")
    return d / "run"


@pytest.mark.parametrize(("make", "expect"), [
    (_pickle, "is a file, not a model"), (_text, "is a file, not a model"),
    (_empty, "no config.json and *.safetensors weights"), (_pickled_weights, "only pickled weights"),
    (_run_without_model, "rerun it with save_model=true"),
])
def test_what_is_not_a_model_is_refused(tmp_path, make, expect):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match="model_path=") as e:
        _model_location(str(path))
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_a_run_directory_means_its_saved_model(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "model" / "config.json").write_text("{}")
    assert _model_location(str(run)) == str(run / "model")


