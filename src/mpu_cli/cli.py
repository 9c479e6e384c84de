"""Entrypoints. `mpu-run` is a Hydra app: `mpu-run algorithm=npo kappa=0.01 m=2`, `mpu-run -m ...` sweeps."""
from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

# The embedded default never needs the Hub; without these a Hub lookup spends ~20 s in retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hydra
from hydra.core.hydra_config import HydraConfig

from mpu_cli.config import ConfigError, register_configs, validate
from mpu_cli.data.validate import DataError
from mpu_cli.transport.errors import TransportError

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)

log = logging.getLogger("mpu_cli")
CONF_DIR = str(Path(__file__).parent / "conf")

register_configs()


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(f"mpu-run: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def _run(cfg) -> float | None:
    from mpu_cli.runner import run

    try:
        validate(cfg)
        out = Path(HydraConfig.get().runtime.output_dir)
        if cfg.client.reference == "server_clean":
            log.warning("reference=server_clean: the client receives the exact theta_0 (the paper's code; a leak)")
        row = run(cfg, out)
    except (ConfigError, FileNotFoundError, DataError) as e:
        fail(str(e))
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        # A full disk (or quota, read-only file system): every write is atomic, so nothing partial is left
        # under a final name; the stages already completed are kept for resume=true.
        where = f" {e.filename}" if e.filename else ""
        fail(f"cannot write{where}: {e.strerror}; nothing partial was kept — free space and rerun with "
             f"resume=true (and the same hydra.run.dir / run_id) to continue from the last completed stage")
    except TransportError as e:  # transport=files: a party's process failed or a file was rejected
        fail(str(e))
    return row.get("forget_Q_A_Prob")


def run_main() -> None:
    """Validate every job of the command line first (nothing written on bad input), then run Hydra."""
    from mpu_cli.validation import precheck

    try:
        precheck(sys.argv[1:], CONF_DIR)
    except ConfigError as e:
        fail(str(e))
    _run()
