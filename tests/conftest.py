import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Prepared models are cached across test sessions (CI sets its own MPU_CACHE_DIR).
os.environ.setdefault("MPU_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "mpu-cli"))

REPO = Path(__file__).resolve().parents[1]
MPU_RUN = str(REPO / ".venv" / "bin" / "mpu-run")


@pytest.fixture(scope="session")
def mpu_run_cmd():
    """The installed console script (falls back to the module for non-venv runs)."""
    import shutil
    import sys

    if Path(MPU_RUN).exists():
        return [MPU_RUN]
    found = shutil.which("mpu-run")
    return [found] if found else [sys.executable, "-c", "from mpu_cli.cli import run_main; run_main()"]
