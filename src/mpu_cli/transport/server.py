"""The server party of the file transport: `mpu-server`'s commands (cli/server.py parses their options).

    init       load θ_0 (the target), start a private server state, put the public model into the exchange
    publish    Pre-Process of the next round -> exchange/round_r/
    aggregate  validate every returned copy (or LoRA adapter), then Post-Process -> θ_r
    status     public facts (round, pending, m, κ, exposed fraction)

Private state (`state_dir`, e.g. RUN/server_private; never inside the exchange folder), in the one server-state
format of run/server_state.py (the in-process run's checkpoint writes the same files):

    state.json              round, pending, the current θ file and its SHA-256, the server config (κ, m, seed …),
                            the layout, published dtypes, tied-tensor aliases; init adds the paths of the
                            target / base and the exchange folder
    theta_r{r}.safetensors  the exact θ_r in fp32 (θ_0 after init); the previous one is removed once the next is
                            committed in state.json
    round_{r}.json          the pending round's secrets: the round seed (α, noise streams and transforms derive
                            from it), σ per block, and the SHA-256 of each published copy; removed at its commit
    model_config/           config.json of the target (for reference)
    public.json             `MPUServer.public_info()` (no secret), refreshed by every command
    noise_survival.json     per round: how much of each copy's noise survived the cast to the published dtype
    log.jsonl               one line per command: its name, round and seconds (imports excluded)

Stages and markers (what a resume may rely on): init writes θ_0 then state.json (last). publish writes the m
copies and their manifests, then round_{r}.json, then state.json (pending), then exchange/round_r/round.json
(last). aggregate validates every returned copy first (nothing is aggregated from a bad file), then writes
θ_r, then state.json (committed), then removes θ_{r-1} and round_{r}.json.

This module never imports the client (mpu_cli.unlearn) nor the data (mpu_cli.data): the server cannot open the
forget set.
"""
from __future__ import annotations

import json
import secrets as _secrets
import time
from pathlib import Path

from mpu_cli.files import atomic_write_json, make_private
from mpu_cli.mpu.settings import ServerConfig
from mpu_cli.run.server_state import STATE, ServerState, current_round
from mpu_cli.transport import exchange as ex
from mpu_cli.transport.errors import TransportError


class ServerError(Exception):
    """Bad input or an inconsistent private state: one line, exit code 2."""


# ---- private state (the format of run/server_state.py, shared with the in-process checkpoint) ---------------


def _read_state(state_dir: Path) -> dict:
    store = ServerState(state_dir)
    if not store.exists():
        raise ServerError(f"{state_dir}: no server state ({STATE} missing); run `mpu-server init` first")
    return store.read()


def restore(state_dir: Path, st: dict, with_base: bool):
    """The MPUServer exactly as the previous command left it (pending round included). Only publishing needs
    the base (σ of a new round); aggregating uses the σ recorded with the round's secrets."""
    from mpu_cli.models.io import resolve_dtype
    from mpu_cli.mpu.build import load_base
    from mpu_cli.mpu.layout import ModelLayout
    from mpu_cli.mpu.server import MPUServer

    store = ServerState(state_dir)
    return MPUServer.restore(store.theta(st), store.restore_meta(st), ModelLayout(**st["layout"]),
                             base=load_base(st.get("base"), resolve_dtype(st["dtype"])) if with_base else None)


def _write_public(state_dir: Path, server) -> None:
    atomic_write_json(Path(state_dir) / "public.json", server.public_info())


def _log(state_dir: Path, command: str, r: int, seconds: float) -> None:
    ServerState(state_dir).log(command, r, seconds)


def _exchange(exchange: Path | None, st: dict) -> Path:
    return Path(exchange or st["exchange"]).resolve()


# ---- commands -------------------------------------------------------------------------------------------------


def init(state_dir: Path, exchange: Path, target: str, settings: ServerConfig, base: str | None = None,
         tokenizer: str | None = None, dtype: str = "float32") -> None:
    """A new private server state at θ_0 = the target; the public architecture and tokenizer (no weights) into
    the exchange folder."""
    import torch
    from transformers import AutoConfig

    from mpu_cli.models.family import UnsupportedModel
    from mpu_cli.models.io import load_tokenizer, resolve_dtype
    from mpu_cli.mpu.build import load_server

    state_dir, exchange = Path(state_dir).resolve(), Path(exchange).resolve()
    if (state_dir / STATE).exists():
        raise ServerError(f"{state_dir} already holds a server state; nothing was overwritten")
    if state_dir == exchange or exchange in state_dir.parents or state_dir in exchange.parents:
        raise ServerError(f"--state {state_dir} and --exchange {exchange} must be separate folders "
                          f"(the private state never goes into the exchange folder)")
    try:
        torch_dtype = resolve_dtype(dtype)
    except ValueError as e:
        raise ServerError(str(e)) from None
    t0 = time.perf_counter()
    try:
        server = load_server(target, base, torch_dtype, settings)
    except UnsupportedModel as e:
        raise ServerError(f"--target {target}: {e}") from None

    # The public model for the client: architecture and tokenizer, never weights.
    config, public_tokenizer = AutoConfig.from_pretrained(target), load_tokenizer(tokenizer or target)

    def save_public(folder: Path) -> None:
        config.save_pretrained(str(folder))
        public_tokenizer.save_pretrained(str(folder))

    ex.write_public(exchange, save_public)  # no link in the exchange folder is followed
    make_private(state_dir)  # θ and the round secrets: owner only (0700 folder, 0600 files)
    ServerState(state_dir).save_model_config(config)  # kept for reference; the layout is in state.json

    store = ServerState(state_dir)
    # θ_0 on disk first: the state exists only once its θ does
    store.write(server, {"run_id": _secrets.token_hex(8), "exchange": str(exchange), "target": target,
                         "base": base, "dtype": dtype, "torch": torch.__version__}, **store.write_theta(0, server.theta))
    _write_public(state_dir, server)
    _log(state_dir, "init", 0, time.perf_counter() - t0)
    print(f"mpu-server: initialised {state_dir} (exchange {exchange}, arm={settings.arm}, m={server.n_copies})")


def publish(state_dir: Path, exchange: Path | None = None) -> None:
    """Pre-Process of the next round: its m copies and their manifests, then the round's marker."""
    state_dir = Path(state_dir).resolve()
    st = _read_state(state_dir)
    exchange = _exchange(exchange, st)
    r = current_round(st["round"], st["pending"])
    if st["pending"]:
        if ex.is_published(exchange, r):
            raise ServerError(f"round {r} is published and not yet aggregated; "
                              f"run `mpu-server aggregate` (fresh noise on the same θ would weaken the copies)")
        _finish_marker(state_dir, st, exchange)
        return
    t0 = time.perf_counter()
    server = restore(state_dir, st, with_base=True)
    if ex.is_published(exchange, r):
        raise ServerError(f"{ex.round_dir(exchange, r)} already holds a published round; nothing was overwritten")
    n = server.n_copies
    spec = server.published_spec()
    server.publish_copies()  # round r starts: fresh secrets
    infos = server.write_copies([ex.copy_dir(exchange, r, k) / ex.PUBLISHED for k in range(n)])
    for k, info in enumerate(infos):
        ex.write_manifest(ex.copy_dir(exchange, r, k) / ex.PUBLISHED_MANIFEST,
                          ex.published_manifest(st["run_id"], r, k, n, info, spec))
    st = ServerState(state_dir).published(server, st, published_sha256=[i["sha256"] for i in infos])
    _write_round_marker(exchange, st["run_id"], r, n)  # last: clients may start
    _write_public(state_dir, server)
    _log(state_dir, "publish", r, time.perf_counter() - t0)
    t0 = time.perf_counter()  # measured while the copies were written: this only stores the record
    ServerState(state_dir).record_survival(server)
    _log(state_dir, "noise_survival", r, time.perf_counter() - t0)
    print(f"mpu-server: published round {r}: {n} copies in {ex.round_dir(exchange, r)}")


def _write_round_marker(exchange: Path, run_id: str, r: int, n: int) -> None:
    marker = {"format": ex.FORMAT, "kind": "round", "run_id": run_id, "round": r, "n_copies": n,
              "copies": [f"copy_{k}" for k in range(n)]}
    ex.check_manifest_is_public(marker)
    atomic_write_json(ex.round_dir(exchange, r) / ex.ROUND_MARKER, marker)


def _finish_marker(state_dir: Path, st: dict, exchange: Path) -> None:
    """publish crashed after committing state.json: the copies are on disk; check them and write the marker."""
    r = st["round"]
    record = ServerState(state_dir).round_secrets(r)["published_sha256"]
    for k, want in enumerate(record):
        digest, _ = ex.sha256_file(ex.copy_dir(exchange, r, k) / ex.PUBLISHED)
        if digest != want:
            raise ServerError(f"round {r} copy {k}: published file differs from the server's record")
    _write_round_marker(exchange, st["run_id"], r, len(record))
    print(f"mpu-server: round {r} marker written ({len(record)} copies already published)")


def validate_returned(state_dir: Path, st: dict, exchange: Path) -> tuple[list[Path], list[float] | None]:
    """Every returned copy of the pending round, checked completely before anything is aggregated: (the files to
    aggregate, None) for updated copies; (the adapters' factor files, each adapter's lora_alpha / r) when every
    copy came back as a LoRA adapter."""
    r = st["round"]
    record = ServerState(state_dir).round_secrets(r)["published_sha256"]
    shapes = _theta_shapes(state_dir, st)
    published = {n: (shapes[n], c) for n, c in st["dtypes"].items()}
    paths, scalings, problems = [], [], []
    for k, pub_sha in enumerate(record):
        try:
            path, scaling = ex.check_returned(exchange, r, k, st["run_id"], pub_sha, published)
            paths.append(path)
            scalings.append(scaling)  # None: an updated copy
        except TransportError as e:
            problems.append((k, str(e)))
    adapters = [s is not None for s in scalings]
    if not problems and any(adapters) and not all(adapters):
        mixed = (f"{ex.where(r, None)}: some copies returned {ex.ADAPTER_CONTENT!r}, others "
                 f"{ex.RETURNED_CONTENT!r}; one round aggregates one kind")
        problems.append((0, mixed))
    if problems:
        ks = " ".join(f"--copy {k}" for k, _ in problems)
        raise TransportError(f"{'; '.join(p for _, p in problems)} — nothing was aggregated; redo with "
                             f"`mpu-client unlearn --exchange {exchange} --round {r} {ks} --config ...`")
    return paths, (scalings if all(adapters) else None)


def _theta_shapes(state_dir: Path, st: dict) -> dict:
    from safetensors import safe_open

    with safe_open(str(Path(state_dir) / st["theta_file"]), framework="pt") as f:
        return {n: tuple(f.get_slice(n).get_shape()) for n in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)


def aggregate(state_dir: Path, exchange: Path | None = None) -> None:
    """Post-Process of the pending round: every returned copy validated first, then θ_r committed."""
    state_dir = Path(state_dir).resolve()
    st = _read_state(state_dir)
    exchange = _exchange(exchange, st)
    if not st["pending"]:
        raise ServerError(f"no published round awaits aggregation (round {st['round']} is aggregated); "
                          f"run `mpu-server publish`")
    r = st["round"]
    t0 = time.perf_counter()
    paths, scalings = validate_returned(state_dir, st, exchange)
    server = restore(state_dir, st, with_base=False)
    store = ServerState(state_dir)
    out = store.theta_path(r)  # θ_r is written there tensor by tensor
    if scalings is None:
        returned = [ex.LazyStateDict(p, st["dtypes"]) for p in paths]
        record = store.round_secrets(r)["published_sha256"]
        published = [(ex.copy_dir(exchange, r, k) / ex.PUBLISHED, sha) for k, sha in enumerate(record)]
        server.aggregate(returned, out=out, published=published)  # streams: one tensor at a time across the files
    else:
        from mpu_cli.mpu.lora_aggregate import aggregate_adapters

        returned = [ex.LazyStateDict(p) for p in paths]
        aggregate_adapters(server, returned, scalings, out=out)  # one weight at a time from the m adapters
    del returned
    store.commit(server, st)  # θ_r is written; state.json names it: the commit point of round r
    _write_public(state_dir, server)
    _log(state_dir, "aggregate", r, time.perf_counter() - t0)
    print(f"mpu-server: aggregated round {r} from {len(paths)} copies")


def status(state_dir: Path) -> dict:
    """The server's public facts (no secret)."""
    state_dir = Path(state_dir).resolve()
    st = _read_state(state_dir)
    public = json.loads((state_dir / "public.json").read_text()) if (state_dir / "public.json").exists() else {}
    return {"round": st["round"], "pending": st["pending"], "exchange": st["exchange"]} | public
