"""`mpu-run transport=files`: the rounds of one run through separate `mpu-server` / `mpu-client` processes that
exchange only files (the in-process runner's wiring, replaced by processes).

Run directory:
    RUN/server_private/   the server's private state (see server_cli); only mpu-server opens it
    RUN/exchange/         the exchange folder (see exchange.py); the only folder both parties see
    RUN/client/client.json the client's own settings (algorithm, client, data, format, dtype)
    RUN/logs/             stdout/stderr of every server and client process

`runner.parallel_copies=N` starts N client processes per round; slot s does copies s, s+N, … one after another
(one copy in flight per slot). Each slot is pinned: with GPUs, CUDA_VISIBLE_DEVICES = one device per slot
(round-robin); on CPU the parent's torch threads are split, OMP_NUM_THREADS = --threads = max(1, threads // N).
With N = 1 the single client process inherits the parent's environment unchanged (same threads as in process).

This module imports neither the server (mpu/) nor the client (unlearn/, data/): it only starts processes.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from mpu_cli.files import atomic_write_json
from mpu_cli.parallel_slots import slot_threads
from mpu_cli.transport.errors import TransportError

log = logging.getLogger(__name__)


def _command(script: str, module: str) -> list[str]:
    """The console script installed next to this interpreter, else the module itself (the same main())."""
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


SERVER = ("mpu-server", "mpu_cli.transport.server_cli")
CLIENT = ("mpu-client", "mpu_cli.transport.client_cli")


def _json_line(line: str) -> dict | None:
    """One line of an append-only log; a line cut short by a kill is skipped."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when mpu-run dies, so a killed run leaves no orphan
    process writing into the run directory while a resumed run starts."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 (best effort: not Linux, or no libc)
        pass


def _check(proc_name: str, rc: int, log_path: Path) -> None:
    if rc == 0:
        return
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()] if log_path.exists() else []
    errors = [ln for ln in lines if "error" in ln.lower()]
    last = (errors or lines or ["(no output)"])[-1]
    raise TransportError(f"{proc_name} exited with code {rc}: {last.strip()} (log: {log_path})")


def _run(cmd: list[str], log_path: Path, env: dict | None = None) -> float:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=_die_with_parent).returncode
    _check(Path(cmd[0]).name if len(cmd) == 1 or cmd[1] != "-m" else cmd[2], rc, log_path)
    return time.perf_counter() - t


def slot_envs(n_slots: int, base_env: dict | None = None) -> list[tuple[dict, int | None]]:
    """(environment, --threads) per client slot; see the module docstring."""
    import torch

    env = dict(os.environ if base_env is None else base_env)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if n_slots == 1:
        return [(env, None)]
    out = []
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        visible = env.get("CUDA_VISIBLE_DEVICES")
        devices = [d for d in visible.split(",") if d] if visible else [str(i) for i in range(torch.cuda.device_count())]
    else:
        devices = []
    threads = slot_threads(n_slots)
    for s in range(n_slots):
        e = dict(env)
        if devices:
            e["CUDA_VISIBLE_DEVICES"] = devices[s % len(devices)]
        e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = str(threads)
        out.append((e, threads))
    return out


def server_init_args(cfg, prepared, state: Path, exchange: Path) -> list[str]:
    args = ["init", "--state", str(state), "--exchange", str(exchange), "--target", prepared.target,
            "--tokenizer", prepared.tokenizer, "--dtype", cfg.model.dtype, "--arm", cfg.arm,
            "--kappa", repr(float(cfg.kappa)), "--m", str(cfg.m),
            "--alpha-schedule", cfg.server.alpha_schedule, "--eta", repr(float(cfg.server.eta)),
            "--noise-reference", cfg.server.noise_reference]
    if prepared.base:
        args += ["--base", prepared.base]
    if cfg.seed is not None:
        args += ["--seed", str(cfg.seed)]
    if cfg.server.perturb_unprotected:
        args += ["--perturb-unprotected"]
    return args


def run_rounds(cfg, out: Path, prepared, client_json: dict, parallel: int = 1) -> tuple[dict, dict]:
    """R rounds through processes; returns (final exact θ in fp32, timings). Raises TransportError."""
    from safetensors.torch import load_file

    out = Path(out).resolve()
    state, exchange, logs = out / "server_private", out / "exchange", out / "logs"
    client_path = out / "client" / "client.json"
    atomic_write_json(client_path, client_json)
    server, client = _command(*SERVER), _command(*CLIENT)
    timings = {"server": 0.0, "client": 0.0, "server_process": 0.0}

    # Resume (issue 7): an existing server state is continued, never re-initialised.
    st0 = json.loads((state / "state.json").read_text()) if (state / "state.json").exists() else None
    if st0 is None:
        timings["server_process"] += _run(server + server_init_args(cfg, prepared, state, exchange),
                                          logs / "server.log")
    public = json.loads((state / "public.json").read_text())
    atomic_write_json(out / "server_public.json", public)
    n = public["m"]
    slots = max(1, min(parallel, n))
    envs = slot_envs(slots)
    first = 1 if st0 is None else (st0["round"] if st0["pending"] else st0["round"] + 1)
    for r in range(first, cfg.rounds + 1):
        if not (st0 is not None and st0["pending"] and r == st0["round"]
                and (exchange / f"round_{r}" / "round.json").exists()):
            # (a pending round without its marker: publish finishes the marker, it does not draw new secrets)
            timings["server_process"] += _run(server + ["publish", "--state", str(state)], logs / "server.log")
        # copies already returned (a resumed round) are not redone
        todo = [k for k in range(n) if not (exchange / f"round_{r}" / f"copy_{k}" / "returned_manifest.json").exists()]
        t = time.perf_counter()
        procs = []
        for s, (env, threads) in enumerate(envs):
            mine = [k for k in todo if k % slots == s]
            if not mine:
                continue
            cmd = client + ["unlearn", "--exchange", str(exchange), "--config", str(client_path), "--round", str(r)]
            for k in mine:
                cmd += ["--copy", str(k)]
            if threads:
                cmd += ["--threads", str(threads)]
            log_path = logs / f"client_r{r}_slot{s}.log"
            f = open(log_path, "a")  # noqa: SIM115 (closed after the process ends, below)
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                       preexec_fn=_die_with_parent), f, log_path))
        failures = []
        for p, f, log_path in procs:
            rc = p.wait()
            f.close()
            try:
                _check("mpu-client", rc, log_path)
            except TransportError as e:
                failures.append(str(e))
        timings["client"] += time.perf_counter() - t
        if failures:
            raise TransportError("; ".join(failures))
        log.info("round %d: %d copies unlearned by %d client process(es)", r, n, slots)
        from mpu_cli.faults import kill_point

        kill_point(f"round{r}_before_aggregate")  # fault-injection tests only (MPU_KILL_AT)
        timings["server_process"] += _run(server + ["aggregate", "--state", str(state)], logs / "server.log")
    # Pre- and Post-Process as measured inside mpu-server (no interpreter start, no init), as in process.
    timings["server"] = sum(e["seconds"] for e in map(_json_line, (state / "log.jsonl").read_text().splitlines())
                            if e and e.get("command") in ("publish", "aggregate"))
    st = json.loads((state / "state.json").read_text())
    theta = load_file(str(state / st["theta_file"]))
    atomic_write_json(out / "server_public.json", json.loads((state / "public.json").read_text()))
    return theta, timings
