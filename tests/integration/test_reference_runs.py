"""Reference runs: refactors must leave results bit-identical.

Each case is a real `mpu-run` with a fixed seed; its *_SUMMARY.json must equal, byte for byte, the one recorded in
tests/reference_runs/<case>.json. The recorded bytes hold on the CPU model that recorded them (the embedded target
is trained on the machine and differs between CPU models in its last bits), so another CPU model skips with the
reason. A deliberate change of results re-records with `MPU_RECORD_REFERENCE=1 pytest tests/test_reference_runs.py`
and says why in its commit.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from mpu_cli.devices import cpu_model

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent / "reference_runs"
CASES = {
    "default": ["seed=0"],
    "graddiff_k0.1_m3": ["algorithm=graddiff", "kappa=0.1", "m=3", "seed=0"],
    "noised": ["arm=noised", "seed=0"],
    "muse_graddiff": ["data=muse", "algorithm=graddiff", "seed=0"],
    "files_r2": ["transport=files", "rounds=2", "seed=0"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_run_is_bit_identical(case, mpu_run_cmd, tmp_path):
    ref_file = HERE / f"{case}.json"
    recording = os.environ.get("MPU_RECORD_REFERENCE") == "1"
    ref = json.loads(ref_file.read_text()) if ref_file.exists() else None
    if not recording:
        assert ref is not None, f"{ref_file} missing: record it with MPU_RECORD_REFERENCE=1"
        if ref["cpu"] != cpu_model():
            pytest.skip(f"recorded on {ref['cpu']!r}, this CPU is {cpu_model()!r}")
    out = tmp_path / case
    proc = subprocess.run([*mpu_run_cmd, *CASES[case], f"hydra.run.dir={out}"], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = next(out.glob("*_SUMMARY.json"))
    data = summary.read_bytes()
    got = {"cpu": cpu_model(), "overrides": CASES[case], "file": summary.name,
           "sha256": hashlib.sha256(data).hexdigest(), "summary": json.loads(data)}
    if recording:
        ref_file.write_text(json.dumps(got, indent=1) + "\n")
        return
    assert (got["file"], got["summary"]) == (ref["file"], ref["summary"])
    assert got["sha256"] == ref["sha256"]
