"""mpu-server: the server party as its own process. It exchanges only files with the client.

    mpu-server init      --state DIR --exchange DIR --target MODEL [--base MODEL] [--tokenizer PATH] [--dtype D]
                         [--arm A] [--kappa K] [--m M] [--seed S] [--alpha-schedule S] [--eta E]
                         [--perturb-unprotected] [--noise-reference base|raw] [--noised-alpha one|mean|max]
                         [--publish-dtype model|float32]
    mpu-server publish   --state DIR [--exchange DIR]     Pre-Process of the next round -> exchange/round_r/
    mpu-server aggregate --state DIR [--exchange DIR]     validate every returned copy, then Post-Process -> θ_r
    mpu-server status    --state DIR                      public facts (round, pending, m, κ, exposed fraction)

Private state (--state, e.g. RUN/server_private; never inside the exchange folder), in the one server-state format
of run/server_state.py (the in-process run's checkpoint writes the same files):

    state.json              round, pending, the current θ file and its SHA-256, the server config (κ, m, seed …),
                            the layout, published dtypes, tied-tensor aliases; mpu-server adds the paths of the
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

import argparse
import json
import os
import secrets as _secrets
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mpu_cli.files import atomic_write_json, make_private
from mpu_cli.run.server_state import STATE, ServerState, ServerStateError
from mpu_cli.transport import exchange as ex
from mpu_cli.transport.exchange import TransportError



class ServerError(Exception):
    """Bad input or an inconsistent private state: one line, exit code 2."""


# ---- private state (the format of run/server_state.py, shared with the in-process checkpoint) ---------------


def _read_state(state_dir: Path) -> dict:
    store = ServerState(state_dir)
    if not store.exists():
        raise ServerError(f"{state_dir}: no server state ({STATE} missing); run `mpu-server init` first")
    return store.read()


def _load_base(st: dict):
    if not st.get("base"):
        return None
    from mpu_cli.models.io import load_model, resolve_dtype, state_dict_fp32

    return state_dict_fp32(load_model(st["base"], resolve_dtype(st["dtype"])))


def _restore(state_dir: Path, st: dict, with_base: bool):
    """The MPUServer exactly as the previous command left it (pending round included). Only publishing needs
    the base (σ of a new round); aggregating uses the σ recorded with the round's secrets."""
    from mpu_cli.mpu.layout import ModelLayout
    from mpu_cli.mpu.server import MPUServer

    store = ServerState(state_dir)
    return MPUServer.restore(store.theta(st), store.restore_meta(st), ModelLayout(**st["layout"]),
                             base=_load_base(st) if with_base else None)


def _write_public(state_dir: Path, server) -> None:
    atomic_write_json(Path(state_dir) / "public.json", server.public_info())


def _log(state_dir: Path, command: str, r: int, seconds: float) -> None:
    with open(Path(state_dir) / "log.jsonl", "a") as f:
        f.write(json.dumps({"command": command, "round": r, "seconds": round(seconds, 4)}) + "\n")


def _exchange(args, st: dict) -> Path:
    return Path(args.exchange or st["exchange"]).resolve()


# ---- commands -------------------------------------------------------------------------------------------------


def cmd_init(args) -> None:
    import torch
    from transformers import AutoConfig

    from mpu_cli.models.family import UnsupportedModel
    from mpu_cli.models.io import load_model, load_tokenizer, resolve_dtype, state_dict_fp32
    from mpu_cli.mpu.layout import ModelLayout
    from mpu_cli.mpu.server import MPUServer, ServerConfig

    state_dir, exchange = Path(args.state).resolve(), Path(args.exchange).resolve()
    if (state_dir / STATE).exists():
        raise ServerError(f"{state_dir} already holds a server state; nothing was overwritten")
    if state_dir == exchange or exchange in state_dir.parents or state_dir in exchange.parents:
        raise ServerError(f"--state {state_dir} and --exchange {exchange} must be separate folders "
                          f"(the private state never goes into the exchange folder)")
    try:
        cfg = ServerConfig(arm=args.arm, kappa=args.kappa, m=args.m, alpha_schedule=args.alpha_schedule,
                           eta=args.eta, seed=args.seed, perturb_unprotected=args.perturb_unprotected,
                           noise_reference=args.noise_reference, noised_alpha=args.noised_alpha,
                           publish_dtype=args.publish_dtype)
        dtype = resolve_dtype(args.dtype)
    except ValueError as e:
        raise ServerError(str(e)) from None
    t0 = time.perf_counter()
    target = load_model(args.target, dtype)
    theta = {k: v.detach().clone() for k, v in target.state_dict().items()}
    try:
        layout = ModelLayout.from_hf_config(target.config)
    except UnsupportedModel as e:
        raise ServerError(f"--target {args.target}: {e}") from None
    del target
    base = state_dict_fp32(load_model(args.base, dtype)) if args.base else None
    server = MPUServer(theta, layout, cfg, base=base)
    del theta

    # The public model for the client: architecture and tokenizer, never weights.
    config = AutoConfig.from_pretrained(args.target)
    public = exchange / ex.PUBLIC_DIR
    config.save_pretrained(str(public))
    load_tokenizer(args.tokenizer or args.target).save_pretrained(str(public))
    make_private(state_dir)  # θ and the round secrets: owner only (0700 folder, 0600 files)
    config.save_pretrained(str(state_dir / "model_config"))  # kept for reference; the layout is in state.json

    store = ServerState(state_dir)
    # θ_0 on disk first: the state exists only once its θ does
    store.write(server, {"run_id": _secrets.token_hex(8), "exchange": str(exchange), "target": args.target,
                         "base": args.base, "dtype": args.dtype, "torch": torch.__version__}, **store.write_theta(0, server.theta))
    _write_public(state_dir, server)
    _log(state_dir, "init", 0, time.perf_counter() - t0)
    print(f"mpu-server: initialised {state_dir} (exchange {exchange}, arm={cfg.arm}, m={server.n_copies})")


def cmd_publish(args) -> None:
    state_dir = Path(args.state).resolve()
    st = _read_state(state_dir)
    exchange = _exchange(args, st)
    r = st["round"] + 1
    if st["pending"]:
        if (ex.round_dir(exchange, st["round"]) / ex.ROUND_MARKER).exists():
            raise ServerError(f"round {st['round']} is published and not yet aggregated; "
                              f"run `mpu-server aggregate` (fresh noise on the same θ would weaken the copies)")
        _finish_marker(state_dir, st, exchange)
        return
    t0 = time.perf_counter()
    server = _restore(state_dir, st, with_base=True)
    rdir = ex.round_dir(exchange, r)
    if (rdir / ex.ROUND_MARKER).exists():
        raise ServerError(f"{rdir} already holds a published round; nothing was overwritten")
    n = server.n_copies
    spec = server.published_spec()
    stream = server.publish_stream()  # round r starts: fresh secrets
    writer = ex.StreamingSafetensorsWriter([ex.copy_dir(exchange, r, k) / ex.PUBLISHED for k in range(n)], spec)
    try:
        for name, tensors in stream:
            writer.write(name, tensors)
        infos = writer.commit()
    except BaseException:
        writer.abort()
        raise
    for k, info in enumerate(infos):
        ex.write_manifest(ex.copy_dir(exchange, r, k) / ex.PUBLISHED_MANIFEST,
                          ex.published_manifest(st["run_id"], r, k, n, info, spec))
    st = ServerState(state_dir).published(server, st, published_sha256=[i["sha256"] for i in infos])
    _write_round_marker(exchange, st["run_id"], r, n)  # last: clients may start
    _write_public(state_dir, server)
    _log(state_dir, "publish", r, time.perf_counter() - t0)
    t0 = time.perf_counter()  # a measurement, not part of Pre-Process: logged on its own
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


def validate_returned(state_dir: Path, st: dict, exchange: Path) -> list[Path]:
    """Every returned copy of the pending round, checked completely before anything is aggregated."""
    r = st["round"]
    record = ServerState(state_dir).round_secrets(r)["published_sha256"]
    accepted = {n: ("F32",) if c == "F32" else ("F32", c) for n, c in st["dtypes"].items()}
    shapes = _theta_shapes(state_dir, st)
    expected = {n: (shapes[n], accepted[n]) for n in st["dtypes"]}
    paths, problems = [], []
    for k, pub_sha in enumerate(record):
        what = ex.where(r, k)
        d = ex.copy_dir(exchange, r, k)
        try:
            m = ex.read_json(d / ex.RETURNED_MANIFEST, what + " (not returned yet?)")
            ex.check_manifest_identity(m, "returned", st["run_id"], r, k, what)
            if m.get("published_sha256") != pub_sha:
                raise TransportError(f"{what}: the update was computed from another published file "
                                     f"(published_sha256 does not match the server's record)")
            if m.get("content") != ex.RETURNED_CONTENT:
                raise TransportError(f"{what}: content {m.get('content')!r}, expected {ex.RETURNED_CONTENT!r}")
            ex.read_validated(d / ex.RETURNED, m, expected, what, load=False)
            paths.append(d / ex.RETURNED)
        except TransportError as e:
            problems.append((k, str(e)))
    if problems:
        ks = " ".join(f"--copy {k}" for k, _ in problems)
        raise TransportError(f"{'; '.join(p for _, p in problems)} — nothing was aggregated; redo with "
                             f"`mpu-client unlearn --exchange {exchange} --round {r} {ks} --config ...`")
    return paths


def _theta_shapes(state_dir: Path, st: dict) -> dict:
    from safetensors import safe_open

    with safe_open(str(Path(state_dir) / st["theta_file"]), framework="pt") as f:
        return {n: tuple(f.get_slice(n).get_shape()) for n in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)


def cmd_aggregate(args) -> None:
    state_dir = Path(args.state).resolve()
    st = _read_state(state_dir)
    exchange = _exchange(args, st)
    if not st["pending"]:
        raise ServerError(f"no published round awaits aggregation (round {st['round']} is aggregated); "
                          f"run `mpu-server publish`")
    r = st["round"]
    t0 = time.perf_counter()
    paths = validate_returned(state_dir, st, exchange)
    server = _restore(state_dir, st, with_base=False)
    returned = [ex.LazyStateDict(p, st["dtypes"]) for p in paths]
    server.aggregate(returned)  # streams: one tensor name at a time across the m files
    del returned
    ServerState(state_dir).commit(server, st)  # θ_r, then state.json: the commit point of round r
    _write_public(state_dir, server)
    _log(state_dir, "aggregate", r, time.perf_counter() - t0)
    print(f"mpu-server: aggregated round {r} from {len(paths)} copies")


def cmd_status(args) -> None:
    state_dir = Path(args.state).resolve()
    st = _read_state(state_dir)
    public = json.loads((state_dir / "public.json").read_text()) if (state_dir / "public.json").exists() else {}
    print(json.dumps({"round": st["round"], "pending": st["pending"], "exchange": st["exchange"]} | public))


# ---- entry point ----------------------------------------------------------------------------------------------


DESCRIPTION = """The MPU server party as its own process (the file transport; `mpu-run transport=files` drives it).
It owns the exact model θ and the round secrets (--state, private) and exchanges only files with the client
(--exchange): init, then per round publish (m perturbed copies) -> the client unlearns them -> aggregate.

  mpu-server init --state RUN/server_private --exchange RUN/exchange --target MODEL --base BASE --m 2 --kappa 0.01
  mpu-server publish --state RUN/server_private
  mpu-client unlearn --exchange RUN/exchange --config CLIENT.json
  mpu-server aggregate --state RUN/server_private
"""


def parser() -> argparse.ArgumentParser:
    from mpu_cli.models.io import DTYPES
    from mpu_cli.mpu.arms import ARMS, NOISED_ALPHAS
    from mpu_cli.mpu.noise import ALPHA_SCHEDULES
    from mpu_cli.mpu.server import NOISE_REFERENCES, PUBLISH_DTYPES

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="mpu-server", description=DESCRIPTION, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True, metavar="{init,publish,aggregate,status}")
    i = sub.add_parser("init", help="load θ_0 (the target) and start a private server state",
                       description="Load θ_0 (the target), write it and the server settings into a new private "
                       "state folder, and put the public architecture and tokenizer (no weights) into the "
                       "exchange folder.")
    i.add_argument("--state", required=True, help="private state folder (never shared)")
    i.add_argument("--exchange", required=True, help="exchange folder shared with the client")
    i.add_argument("--target", required=True, help="the server's model θ_0 (local folder or Hub name)")
    i.add_argument("--base", default=None, help="public base model θ_base (σ reference); omit for none")
    i.add_argument("--tokenizer", default=None, help="public tokenizer to hand to the client (default: --target)")
    # Accepted values are listed, not enforced by argparse: ServerConfig refuses a bad one in one line.
    i.add_argument("--dtype", default="float32",
                   help=f"training / publishing dtype: {' | '.join(DTYPES)} (default: %(default)s)")
    i.add_argument("--publish-dtype", default="model",
                   help=f"{' | '.join(PUBLISH_DTYPES)}: the copies in --dtype, or in float32 whatever --dtype (the "
                   "client then trains in float32) (default: %(default)s)")
    i.add_argument("--arm", default="mpu",
                   help=f"{' | '.join(ARMS)}: θ itself; one noisy copy; m reparameterized noisy copies "
                   "(default: %(default)s)")
    i.add_argument("--kappa", type=float, default=0.01,
                   help="noise level κ: σ_l = κ·RMS(θ_l − θ_base,l) (default: %(default)s)")
    i.add_argument("--m", type=int, default=2, help="number of perturbed copies (mpu: m ≥ 2; default: %(default)s)")
    i.add_argument("--seed", type=int, default=None, help="reproducible secrets (recorded); omit for a CSPRNG")
    i.add_argument("--alpha-schedule", default="linear",
                   help=f"the copies' scale factors α_k: {' | '.join(ALPHA_SCHEDULES)} (linear: α_k = "
                   "1+(k−1)/(m−1); default: %(default)s)")
    i.add_argument("--eta", type=float, default=1.0,
                   help="server step: θ_r = θ_{r−1} + η·(aggregate − θ_{r−1}) (default: %(default)s)")
    i.add_argument("--perturb-unprotected", action="store_true",
                   help="also perturb embeddings, LM head and final norm (default: published exactly)")
    i.add_argument("--noise-reference", default="base",
                   help=f"{' | '.join(NOISE_REFERENCES)}: σ from θ − θ_base, or from θ itself (a model "
                   "without base) (default: %(default)s)")
    i.add_argument("--noised-alpha", default="one",
                   help=f"arm=noised: the copy's noise scale α·σ, α = {' | '.join(NOISED_ALPHAS)}: 1, or the mean / "
                   "largest α_k of m MPU copies under --alpha-schedule (default: %(default)s)")
    for name, what in (("publish", "Pre-Process of the next round: the m copies -> exchange/round_r/"),
                       ("aggregate", "validate every returned copy, then Post-Process -> θ_r")):
        c = sub.add_parser(name, help=what, description=what)
        c.add_argument("--state", required=True, help="the private state folder given to init")
        c.add_argument("--exchange", default=None, help="default: the folder given to init")
    s = sub.add_parser("status", help="public facts: round, pending, m, κ, exposed fraction (JSON)",
                       description="Print the server's public facts as JSON (no secret).")
    s.add_argument("--state", required=True, help="the private state folder given to init")
    return p


COMMANDS = {"init": cmd_init, "publish": cmd_publish, "aggregate": cmd_aggregate, "status": cmd_status}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ServerError, ServerStateError, TransportError, OSError) as e:  # OSError: a model path that cannot be opened
        print(f"mpu-server: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # every stage commits atomically: the state is the last committed one
        print("mpu-server: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
