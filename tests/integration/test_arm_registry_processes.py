"""The arm objects (mpu/arms.py): the variant files are named after them, the run-folder tags, report names and
labels are the strings runs have always had, and the config and the server refuse a bad m with one rule."""
from __future__ import annotations

import subprocess
import sys


def test_the_arm_module_loads_without_torch():
    code = "import sys, mpu_cli.mpu.arms; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

