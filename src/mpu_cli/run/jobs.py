"""`runner.launcher=submitit`: every copy of a round is one cluster job running `mpu-client`, submitted through
submitit (the library behind Hydra's SLURM launcher): SLURM, or its local executor (real processes on this
machine, the same submission, watching and reporting as on SLURM).

The server side is ProcessRounds' (mpu-server init / publish / aggregate as processes of mpu-run); only the
client side differs: per round, one job per copy not yet returned, each with runner.submitit's resources
(GPUs, CPUs, memory, partition, time limit, setup lines). A job reads its published copy from RUN/exchange and
writes its returned copy there, as `mpu-client` always does (the exchange folder must be on a file system the
nodes share). With client.accelerate_config the job runs `accelerate launch --config_file … -m
mpu_cli.cli.client` over its GPUs (gpus_per_copy processes).

A job's command line and environment carry no secret: the arguments name the exchange folder, CLIENT.json, the
round and the copy; the environment is mpu-run's without SERVER_ONLY_ENV (submitit's local executor and
`sbatch` both pass on the submitting process's environment). Every submission is appended to RUN/logs/jobs.jsonl
(round, copy, job id, log); the jobs' own files are in RUN/logs/jobs/.

The server waits for every job, then aggregates. A job that ends without returning its copy (failed, cancelled,
timed out) stops the run with one line naming its job id and log (exit 1); `resume=true` resubmits only the
copies not returned. A stopped mpu-run (SIGINT / SIGTERM) cancels the jobs it is waiting for.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from mpu_cli.config import JobCluster
from mpu_cli.run import signals
from mpu_cli.run.copy_job import ClientJob, CopyJobError
from mpu_cli.run.processes import SERVER_ONLY_ENV, ProcessRounds, _command, log_error_line
from mpu_cli.transport import exchange as ex

log = logging.getLogger(__name__)

CLIENT_MODULE = "mpu_cli.cli.client"
ACCELERATE = ("accelerate", "accelerate.commands.accelerate_cli")
RECORD = "jobs.jsonl"


def check(settings) -> None:
    """ValueError when the cluster asked for cannot take jobs here (before any work starts)."""
    if settings.cluster == JobCluster.slurm and shutil.which("sbatch") is None:
        raise ValueError("runner.submitit.cluster=slurm: `sbatch` is not on this machine's PATH; accepted here: "
                         "local (or auto), or run mpu-run on a SLURM login node")


def client_prefix(client_cfg, gpus: int) -> list[str]:
    """The job's program up to `unlearn`: mpu-client, or the client module under `accelerate launch`."""
    name = client_cfg.get("accelerate_config")
    if not name:
        return _command("mpu-client", CLIENT_MODULE)
    from mpu_cli.unlearn.accel import launch_command

    launch = _command(*ACCELERATE) + launch_command(name)[1:]
    if gpus > 0:
        launch += ["--num_processes", str(gpus)]
    return launch + ["-m", CLIENT_MODULE]


def executor(settings, folder: Path):
    """submitit's executor for runner.submitit (resources per copy job; the job name is set per submission)."""
    import submitit

    cluster = None if settings.cluster == JobCluster.auto else str(settings.cluster)
    ex_ = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    setup = [str(line) for line in settings.setup]
    params = {"timeout_min": int(settings.timeout_min), "gpus_per_node": int(settings.gpus_per_copy), "nodes": 1,
              "tasks_per_node": 1, "cpus_per_task": settings.cpus_per_copy, "mem_gb": settings.mem_gb,
              "stderr_to_stdout": True, "slurm_partition": settings.partition, "slurm_account": settings.account,
              "slurm_qos": settings.qos, "slurm_additional_parameters": dict(settings.additional) or None,
              "slurm_setup": setup or None, "local_setup": setup or None}
    ex_.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex_


@contextmanager
def _without_server_env():
    """mpu-run's environment without SERVER_ONLY_ENV while jobs are submitted (they inherit it)."""
    saved = {k: os.environ.pop(k) for k in SERVER_ONLY_ENV if k in os.environ}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        yield
    finally:
        os.environ.update(saved)


class JobRounds(ProcessRounds):
    """ProcessRounds whose client side is one submitit job per copy. Raises CopyJobError when a copy job ends
    without returning its copy."""

    def __init__(self, cfg, out: Path, prepared):
        super().__init__(cfg, out, prepared)
        self.settings = cfg.runner.submitit
        check(self.settings)
        self.folder = self.logs / "jobs"
        self.prefix = client_prefix(cfg.client, int(self.settings.gpus_per_copy))

    def _command(self, r: int, k: int) -> list[str]:
        cmd = self.prefix + ["unlearn", "--exchange", str(self.exchange), "--config", str(self.client_path),
                             "--round", str(r), "--copy", str(k)]
        if self.settings.cpus_per_copy:
            cmd += ["--threads", str(self.settings.cpus_per_copy)]
        return cmd

    def unlearn(self, r: int, total: int) -> None:
        todo = [k for k in range(self.n) if not self._returned(r, k)]  # a resumed round: the rest
        t = time.perf_counter()
        jobs = {}
        try:
            ex_ = executor(self.settings, self.folder)
            with _without_server_env():
                for k in todo:
                    ex_.update_parameters(name=f"mpu-r{r}-copy{k}")
                    jobs[k] = ex_.submit(ClientJob(self._command(r, k)))
                    self._record(r, k, jobs[k])
            seen = set(range(self.n)) - set(todo)
            while not all(job.done() for job in jobs.values()):
                self._report_returned(r, seen, t)
                time.sleep(float(self.settings.poll_s))
            self._report_returned(r, seen, t)
            signals.check()
        except BaseException:  # stopped (or failed) while waiting: the jobs of this round do not go on alone
            for job in jobs.values():
                if not job.done():
                    job.cancel(check=False)
            raise
        self.timings["client"] += time.perf_counter() - t
        failed = [self._failure(r, k, job) for k, job in jobs.items() if not ex.is_returned(self.exchange, r, k)]
        if failed:
            raise CopyJobError("; ".join(failed) + "; a resumed run resubmits only the copies not returned")
        log.info("round %d: %d copies unlearned by %d cluster job(s)", r, self.n, len(jobs))

    def _record(self, r: int, k: int, job) -> None:
        entry = {"round": r, "copy": k, "job_id": str(job.job_id), "log": str(job.paths.stdout)}
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / RECORD, "a") as f:
            f.write(json.dumps(entry) + "\n")
        log.info("round %d copy %d/%d: submitted as job %s (log: %s)", r, k + 1, self.n, job.job_id, job.paths.stdout)

    @staticmethod
    def _failure(r: int, k: int, job) -> str:
        logfile = Path(job.paths.stdout)
        return (f"round {r} copy {k}: job {job.job_id} ended ({job.state}) without returning its copy: "
                f"{log_error_line(logfile)} (log: {logfile})")

