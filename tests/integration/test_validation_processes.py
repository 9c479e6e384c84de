"""Bad input stops `mpu-run` before any work: one line naming the value and the accepted ones, exit code 2,
no run (or sweep) directory, nothing in the cache."""
import os
import subprocess

import pytest

# Each invalid input of the issue, through the real console script (cwd = an empty folder).
CASES = [
    # (command line, substrings of the one-line message)
    (["model=nope"], ["model='nope'", "tiny"]),
    (["algorithm=nope"], ["algorithm='nope'", "npo", "graddiff"]),
    (["data=nope"], ["data='nope'", "embedded", "tofu"]),
    (["kappa=-0.5"], ["kappa=-0.5", ">= 0"]),
    (["m=0"], ["m=0", ">= 1"]),
    (["arm=mpu", "m=1"], ["m=1", "arm=mpu", "m >= 2"]),
    (["rounds=0"], ["rounds=0", ">= 1"]),
    (["data.source=/nonexistent/TOFU"], ["data.source='/nonexistent/TOFU'", "does not exist", "embedded"]),
    (["foo=1"], ["unknown key 'foo'", "kappa"]),
    (["-m", "arm=clean,mpu", "m=1"], ["m=1", "m >= 2"]),  # a sweep: no sweep directory either
    (["server.eta=-1"], ["server.eta=-1.0 must be > 0"]),  # a number's declared range
    (["eval.metrics=quik"], ["eval.metrics='quik' is not one of ['all', 'quick']; did you mean 'quick'?"]),  # an Enum
]



@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_invalid_input_exits_2_with_one_line_and_writes_nothing(mpu_run_cmd, tmp_path, args, expected):
    env = dict(os.environ, MPU_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [*mpu_run_cmd, *args], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mpu-run: error: ")
    for s in expected:
        assert s in lines[0], (s, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outputs/, multirun/ or cache

