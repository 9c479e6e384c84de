"""The privacy-audit harness checked against known answers."""



import pytest

from mpu_cli.cli.audit import main as audit_main


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    """Prepares (or reuses) the embedded default and audits one round, B1 included."""
    out = tmp_path / "audit"
    audit_main(["kappa=0.1", "m=2", "seed=0", "client.epochs=1", f"out={out}"])
    import json

    report = json.loads((out / "privacy_report.json").read_text())
    assert report["attacks"]["oracle"]["rel_err_protected"] < 1e-5
    assert 0.0 <= report["attacks"]["B1"]["auc"] <= 1.0
    assert (out / "privacy_report.md").read_text().startswith("# Privacy audit")

