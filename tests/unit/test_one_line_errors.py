"""Bad input to the side commands is one line and exit code 2, never a traceback."""
from __future__ import annotations

import json

import pytest

from mpu_cli.transport import exchange as ex


def _exchange_with_a_round(root):
    marker = {"format": ex.FORMAT, "kind": "round", "run_id": "r", "round": 1, "n_copies": 1, "copies": ["copy_0"]}
    (root / "exchange" / "round_1").mkdir(parents=True)
    (root / "exchange" / "round_1" / ex.ROUND_MARKER).write_text(json.dumps(marker))
    return root / "exchange"


MISTYPED = [("lr", "abc"), ("epochs", 1.5), ("max_grad_norm", True), ("gradient_checkpointing", "yes")]


@pytest.mark.parametrize("field, value, expected", [
    *((f, v, f"client.{f}={v!r} is not") for f, v in MISTYPED),
    ("lr", -1.0, "client.lr=-1.0 must be > 0"), ("epochs", 0, "client.epochs=0 must be >= 1"),
    ("max_grad_norm", float("inf"), "client.max_grad_norm=inf is not a finite number; accepted: a finite number > 0"),
    ("reference", "nope", "client.reference='nope' is not one of ['client_copy', 'server_clean']"),
])
def test_mpu_client_checks_a_setting_as_mpu_run_does(tmp_path, capsys, field, value, expected):
    """CLIENT.json is read without the config schema: its declared types, choices and ranges still hold."""
    from omegaconf import OmegaConf

    from mpu_cli.cli import client
    from mpu_cli.config import MPUConfig
    from mpu_cli.run.settings import client_settings

    settings = client_settings(OmegaConf.structured(MPUConfig))
    settings["client"][field] = value
    (tmp_path / "client.json").write_text(json.dumps(settings))
    with pytest.raises(SystemExit) as e:
        client.main(["unlearn", "--exchange", str(_exchange_with_a_round(tmp_path)), "--config",
                     str(tmp_path / "client.json")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and expected in err, err


def test_mpu_audit_out_naming_an_existing_file(tmp_path, capsys):
    from mpu_cli.cli import audit

    (tmp_path / "report.txt").write_text("the user's own file")
    with pytest.raises(SystemExit) as e:
        audit.main(["kappa=0.1", "m=2", "seed=0", f"out={tmp_path / 'report.txt'}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and "is not a writable folder" in err, err
    assert (tmp_path / "report.txt").read_text() == "the user's own file"


def test_a_sweep_into_a_folder_that_cannot_take_it_is_refused_before_hydra_starts(tmp_path):
    """hydra.sweep.dir below a regular file (the tests run as root, whom a read-only mode does not stop)."""
    from mpu_cli.cli.precheck import precheck
    from mpu_cli.config import CONF_DIR, ConfigError

    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match=r"hydra.sweep.dir=.* cannot take the sweep \(.*is not a folder\)"):
        precheck(["-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'a_file' / 'sweep'}"], CONF_DIR)
    precheck(["-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'new' / 'sweep'}"], CONF_DIR)  # accepted
    assert not (tmp_path / "new").exists()  # the check creates nothing
