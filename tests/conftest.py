import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Several tests start mpu-run processes side by side on a 2-core machine: one torch thread each, because
# oversubscribed OpenMP threads make a tiny model an order of magnitude slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Prepared models are cached across test sessions (CI sets its own MPU_CACHE_DIR).
os.environ.setdefault("MPU_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "mpu-cli"))

REPO = Path(__file__).resolve().parents[1]
# The helpers module sits beside this file; both layers import it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
MPU_RUN = str(REPO / ".venv" / "bin" / "mpu-run")

# Two layers, one folder each. tests/unit starts no process and builds no prepared model: the server math,
# losses, metrics, config checks, report tables; plain `pytest` runs it. tests/integration holds everything else:
# its tests are marked `integration`, and a unit test that asks for a fixture starting processes or building the
# embedded models is an error, not a silent member of the wrong layer.
INTEGRATION_FIXTURES = {"mpu_run_cmd", "prepared_models"}
INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Plain `pytest` (no path given: the unit layer from testpaths) runs on two workers, which halves its ~100 s
    on 2 cores; a run naming its files or its own -n keeps what it asked for."""
    if (config.args_source == pytest.Config.ArgsSource.TESTPATHS and hasattr(config.option, "numprocesses")
            and config.option.numprocesses is None and not hasattr(config, "workerinput")):
        config.option.numprocesses = 2


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
        elif INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(f"{item.nodeid} uses {sorted(INTEGRATION_FIXTURES & set(item.fixturenames))}: "
                                    "it belongs in tests/integration")
    # The unit layer first (a stable sort keeps each layer's own order): every worker starts with unit tests,
    # and the first that reaches the integration layer builds the prepared models while the others are still
    # busy, instead of all waiting for it idle.
    items.sort(key=lambda item: item.get_closest_marker("integration") is not None)


@pytest.fixture(scope="session")
def prepared_models():
    """Build the embedded base/target/retain models once, before any test starts mpu-run processes:
    several concurrent runs that all miss the cache would each build the same models side by side."""
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import register_configs
    from mpu_cli.models.prepare import prepare_models

    register_configs()
    conf = str(REPO / "src" / "mpu_cli" / "conf")
    # Both workers need the target first; then each builds a different split's retain model, side by side.
    splits = ["forget01", "forget10"]
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        splits.reverse()
    with initialize_config_dir(config_dir=conf, version_base=None):
        for split in splits:
            cfg = compose(config_name="config", overrides=[f"data.split={split}"])
            prepare_models(cfg.model, cfg.data, cfg.prepare)


@pytest.fixture(scope="session")
def mpu_run_cmd(prepared_models):
    """The installed console script (falls back to the module for non-venv runs)."""
    import shutil
    import sys

    if Path(MPU_RUN).exists():
        return [MPU_RUN]
    found = shutil.which("mpu-run")
    return [found] if found else [sys.executable, "-c", "from mpu_cli.cli.run import run_main; run_main()"]


@pytest.fixture(scope="module")
def hydra_conf():
    """Hydra initialised on the shipped configs, for the tests that compose them."""
    from hydra import initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_compose"):
        yield


class _GroupConfigs(dict):
    """{(group, option): cfg}, each composed on first use: a worker composes only the options its tests read."""

    def __missing__(self, key):
        from hydra import compose, initialize_config_dir

        from mpu_cli.config import CONF_DIR, register_configs

        group, option = key
        register_configs()
        with initialize_config_dir(version_base=None, config_dir=CONF_DIR, job_name="test_compose"):
            self[key] = compose("config", overrides=[f"{group}={option}"])
        return self[key]


@pytest.fixture(scope="session")
def group_configs():
    """mpu-run's configuration composed with each option of each config group alone, {(group, option): cfg}:
    composed once for every test that reads them (a composition takes a Hydra pass)."""
    return _GroupConfigs()


@pytest.fixture(scope="module")
def data():
    """The embedded TOFU-like data set, every config of it."""
    from mpu_cli.data.tofu import EMBEDDED, TOFU_CONFIGS, load_split

    return {c: load_split(EMBEDDED, c) for c in TOFU_CONFIGS}
