"""The privacy-audit harness checked against known answers."""



import os

import pytest

from mpu_cli.cli.audit import main as audit_main

MPU_CACHE = os.environ.get("MPU_CACHE_DIR", "~/.cache/mpu-cli")  # prepare.cache_dir's default


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    """Prepares (or reuses) the embedded default and audits one round, B1 included; its readable outputs name
    the seed by its tag only."""
    import json

    from mpu_cli.run import seed_tag

    out = tmp_path / "audit"
    audit_main(["kappa=0.1", "m=2", "seed=987654", "client.epochs=1", f"out={out}"])
    texts = [(out / name).read_text() for name in ("privacy_report.json", "privacy_report.md")]
    assert not [t for t in texts if "987654" in t]
    report = json.loads(texts[0])
    assert report["config"]["seed"] == seed_tag.tag(987654, MPU_CACHE)
    assert report["attacks"]["oracle"]["rel_err_protected"] < 1e-5
    assert 0.0 <= report["attacks"]["B1"]["auc"] <= 1.0
    assert (out / "privacy_report.md").read_text().startswith("# Privacy audit")

