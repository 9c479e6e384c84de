"""`mpu-run transport=files`: the rounds of one run (run/rounds.drive) through separate `mpu-server` /
`mpu-client` processes that exchange only files.

Run directory:
    RUN/server_private/   the server's private state (transport/server.py); only mpu-server opens it, and its
                          server.json, the server's settings (mpu/settings.ServerConfig: arm, κ, m, seed, …)
    RUN/exchange/         the exchange folder (see exchange.py); the only folder both parties see
    RUN/client/client.json the client's own settings (algorithm, client, data, format, dtype)
    RUN/logs/             stdout/stderr of every server and client process

`runner.parallel_copies=N` starts N client processes per round; slot s does copies s, s+N, … one after another
(one copy in flight per slot). Each slot is pinned: with GPUs, CUDA_VISIBLE_DEVICES = one device per slot
(round-robin); on CPU the parent's torch threads are split, OMP_NUM_THREADS = --threads = max(1, threads // N).
With N = 1 the single client process inherits the parent's environment (same threads as in process). No
client process inherits the server's own variables (SERVER_ONLY_ENV: the model cache, which holds θ_0), and
the logged command lines withhold the target's (and its tokenizer's) path and the seed (PRIVATE_ARGS).

This module starts processes; it runs neither the server's arithmetic nor the client's training itself.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from mpu_cli.faults import kill_point
from mpu_cli.files import atomic_write_json, make_private
from mpu_cli.mpu.settings import ServerConfig
from mpu_cli.run import signals
from mpu_cli.run.server_state import ServerState, current_round
from mpu_cli.run.settings import client_settings
from mpu_cli.run.slots import slot_threads
from mpu_cli.transport import exchange as ex
from mpu_cli.transport.errors import TransportError

log = logging.getLogger(__name__)


def _command(script: str, module: str) -> list[str]:
    """The console script installed next to this interpreter, else the module itself (the same main())."""
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


SERVER = ("mpu-server", "mpu_cli.cli.server")
SERVER_JSON = "server.json"  # SERVER.json: the server's settings, in its private state folder
CLIENT = ("mpu-client", "mpu_cli.cli.client")


def _json_line(line: str) -> dict | None:
    """One line of an append-only log; a line cut short by a kill is skipped."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def _child_setup() -> None:
    """In the child before exec (Linux): SIGKILL it when mpu-run dies, so a killed run leaves no orphan
    process writing into the run directory while a resumed run starts; a stop signal sent to it meanwhile is
    mpu-run's (run/signals.py)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 (best effort: not Linux, or no libc)
        pass
    kill_point("fork")
    signals.child_setup()


def _start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Popen with SIGINT / SIGTERM held back while forking; a child started as one arrived is stopped again."""
    proc = None
    try:
        with signals.held_back():
            proc = subprocess.Popen(cmd, preexec_fn=_child_setup, **kwargs)
    except BaseException:
        if proc is not None:
            proc.kill()
            proc.wait()
        raise
    return proc


def _check(proc_name: str, rc: int, log_path: Path) -> None:
    if rc == 0:
        return
    if rc < 0:  # killed: its last line is whatever it had done before, not why it stopped
        import signal

        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else f"signal {-rc}"
        raise TransportError(f"{proc_name} was killed by {name} (log: {log_path}); rerun with resume=true to redo "
                             "only the copies not returned")
    raise TransportError(f"{proc_name} exited with code {rc}: {log_error_line(log_path)} (log: {log_path})")


def log_error_line(log_path: Path) -> str:
    """What a failed process's log says last about an error (else its last line)."""
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()] if log_path.exists() else []
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1].strip()


# Arguments of mpu-server whose value the logs must not show: where the private model lies (its tokenizer is
# usually read from the same folder), and the seed every round secret derives from.
PRIVATE_ARGS = ("--target", "--tokenizer", "--seed")
# The server's environment the client must not inherit: MPU_CACHE_DIR holds θ_0 (the prepared target).
SERVER_ONLY_ENV = ("MPU_CACHE_DIR",)


def shown(cmd: list[str]) -> str:
    """The command line as the logs show it: the value of every PRIVATE_ARGS option withheld."""
    return " ".join("(withheld)" if i and cmd[i - 1] in PRIVATE_ARGS else a for i, a in enumerate(cmd))


def _run(cmd: list[str], log_path: Path, env: dict | None = None) -> float:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log_path, "a") as f:
        f.write(f"$ {shown(cmd)}\n")
        f.flush()
        proc = _start(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    signals.check()  # a safe point: a stop signal is acted on before the next step
    _check(Path(cmd[0]).name if len(cmd) == 1 or cmd[1] != "-m" else cmd[2], rc, log_path)
    return time.perf_counter() - t


def slot_envs(n_slots: int, base_env: dict | None = None) -> list[tuple[dict, int | None]]:
    """(environment, --threads) per client slot, without SERVER_ONLY_ENV; see the module docstring."""
    import torch

    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if k not in SERVER_ONLY_ENV}
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


def write_server_settings(cfg, state: Path) -> Path:
    """SERVER.json of the run, into the server's private folder (it holds the seed, a secret); returns its path."""
    path = make_private(state) / SERVER_JSON
    ServerConfig.from_config(cfg).write(path)
    return path


def server_init_args(prepared, dtype: str, state: Path, exchange: Path, settings: Path) -> list[str]:
    """`mpu-server init` of the prepared models; its settings (the seed among them) travel in SERVER.json."""
    args = ["init", "--state", str(state), "--exchange", str(exchange), "--target", prepared.target,
            "--tokenizer", prepared.tokenizer, "--dtype", dtype, "--config", str(settings)]
    if prepared.base:
        args += ["--base", prepared.base]
    return args


class ProcessRounds:
    """The backend of run/rounds.drive over processes: mpu-server init / publish / aggregate, and per round
    N mpu-client processes (one slot each, copies s, s+N, …). Raises TransportError when a process fails."""

    def __init__(self, cfg, out: Path, prepared, parallel: int = 1):
        out = Path(out).resolve()
        self.state, self.exchange, self.logs = out / "server_private", out / "exchange", out / "logs"
        self.out = out
        self.client_path = out / "client" / "client.json"
        atomic_write_json(self.client_path, client_settings(cfg))
        self.settings_path = write_server_settings(cfg, self.state)
        self.server, self.client = _command(*SERVER), _command(*CLIENT)
        self.timings = {"server": 0.0, "client": 0.0, "server_process": 0.0}
        # Resume: an existing server state is continued, never re-initialised.
        store = ServerState(self.state)
        self.st0 = store.read() if store.exists() else None  # a damaged state: ServerStateError, one line
        if self.st0 is None:
            log.info("mpu-server init: loading the target and the base, writing θ_0 and the public model")
            self._server(server_init_args(prepared, cfg.model.dtype, self.state, self.exchange, self.settings_path))
        public = json.loads((self.state / "public.json").read_text())
        atomic_write_json(out / "server_public.json", public)
        self.n = public["m"]
        self.slots = max(1, min(parallel, self.n))
        self.envs = slot_envs(self.slots)

    def _server(self, args: list[str]) -> None:
        self.timings["server_process"] += _run(self.server + args, self.logs / "server.log")

    def remaining(self, total: int) -> range:
        st = self.st0 or {"round": 0, "pending": False}
        return range(current_round(st["round"], st["pending"]), total + 1)

    def publish(self, r: int) -> None:
        st = self.st0
        if not (st is not None and st["pending"] and r == st["round"] and ex.is_published(self.exchange, r)):
            # (a pending round without its marker: publish finishes the marker, it does not draw new secrets)
            self._server(["publish", "--state", str(self.state)])

    def unlearn(self, r: int, total: int) -> None:
        # copies already returned (a resumed round) are not redone, unless the server would refuse them
        todo = [k for k in range(self.n) if not self._returned(r, k)]
        t = time.perf_counter()
        procs = []
        for s, (env, threads) in enumerate(self.envs):
            mine = [k for k in todo if k % self.slots == s]
            if not mine:
                continue
            cmd = self.client + ["unlearn", "--exchange", str(self.exchange), "--config", str(self.client_path),
                                 "--round", str(r)]
            for k in mine:
                cmd += ["--copy", str(k)]
            if threads:
                cmd += ["--threads", str(threads)]
            log_path = self.logs / f"client_r{r}_slot{s}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            f = open(log_path, "a")  # noqa: SIM115 (closed after the process ends, below)
            f.write(f"$ {shown(cmd)}\n")
            f.flush()
            procs.append((_start(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), f, log_path))
        # Report each copy as the client returns it (the client processes write only to their logs).
        seen = set(range(self.n)) - set(todo)
        while any(p.poll() is None for p, _, _ in procs):
            self._report_returned(r, seen, t)
            time.sleep(0.5)
        self._report_returned(r, seen, t)
        signals.check()
        failures = []
        for p, f, log_path in procs:
            rc = p.wait()
            f.close()
            try:
                _check("mpu-client", rc, log_path)
            except TransportError as e:
                failures.append(str(e))
        self.timings["client"] += time.perf_counter() - t
        if failures:
            raise TransportError("; ".join(failures))
        log.info("round %d: %d copies unlearned by %d client process(es)", r, self.n, self.slots)

    def _returned(self, r: int, k: int) -> bool:
        if not ex.is_returned(self.exchange, r, k):
            return False
        refusal = ex.returned_refusal(self.exchange, r, k)
        if refusal:
            log.warning("round %d copy %d/%d: the returned copy would be refused (%s); it is redone", r, k + 1,
                        self.n, refusal)
        return refusal is None

    def _report_returned(self, r: int, seen: set, t0: float) -> None:
        for k in range(self.n):
            if k not in seen and ex.is_returned(self.exchange, r, k):
                seen.add(k)
                log.info("round %d copy %d/%d returned by mpu-client (%.1f s)", r, k + 1, self.n,
                         time.perf_counter() - t0)

    def aggregate(self, r: int) -> None:
        self._server(["aggregate", "--state", str(self.state)])
        atomic_write_json(self.out / "server_public.json", json.loads((self.state / "public.json").read_text()))

    def result(self) -> tuple[dict, dict]:
        from mpu_cli.models.files import open_file

        # Pre- and Post-Process as measured inside mpu-server (no interpreter start, no init), as in process.
        lines = (self.state / "log.jsonl").read_text().splitlines()
        self.timings["server"] = sum(e["seconds"] for e in map(_json_line, lines)
                                     if e and e.get("command") in ("publish", "aggregate"))
        st = json.loads((self.state / "state.json").read_text())
        return open_file(self.state / st["theta_file"]), self.timings  # read one tensor at a time
