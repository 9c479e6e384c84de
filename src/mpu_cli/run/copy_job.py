"""What one copy's cluster job runs (runner.launcher=submitit; run/jobs.py submits it). Light on purpose: the
job process unpickles this before anything else, so it imports neither torch nor the server.
"""
from __future__ import annotations

import subprocess
import sys


class CopyJobError(RuntimeError):
    """A copy job that ended without returning its copy: one line with its job id and log (exit 1)."""


class ClientJob:
    """The submitted function: run the `mpu-client` command line (or `accelerate launch … mpu_cli.cli.client`)
    with the job's own environment; its output goes to the job's log. The command line holds no secret."""

    def __init__(self, command: list[str]):
        self.command = list(command)

    def __call__(self) -> None:
        print("$ " + " ".join(self.command), flush=True)
        rc = subprocess.call(self.command)  # (a stop signal kills the client too: call() kills its child)
        if rc != 0:  # the job fails with the client's code, and the client's own error line ends its log
            sys.exit(rc)
