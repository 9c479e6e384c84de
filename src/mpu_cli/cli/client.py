"""mpu-client: the client party as its own process.

    mpu-client unlearn --exchange DIR --config CLIENT.json [--round R] [--copy K ...] [--threads N]

Its inputs, all of them:
  * the exchange folder: `public/` (the public architecture config.json and tokenizer — no weights) and
    `round_R/copy_K/published.safetensors` + `manifest.json` (the published copies);
  * CLIENT.json, the client's own settings (run/settings.client_settings writes one):
        algorithm: {name, params}            the unlearning algorithm 𝒜
        client:    {lr, epochs, batch_size, grad_accum, seed, …}   the ClientConfig fields
        data:      {source, split}           its private forget (and retain) data
        format:    {system_prompt, date_string, max_length}        how it formats its questions
        dtype:     training dtype
  * the data it names (the embedded set or a TOFU-like folder / Hub name).
Nothing else: no θ, no seed, α or σ of the server, no path to the server's state or models.

Output, per copy: `returned.safetensors` (the updated copy θ̃^(k), float32) — or, under client.lora, the adapter in
peft's files `adapter_model.safetensors` + `adapter_config.json` — and, written last, `returned_manifest.json`. Without --copy, every copy of the round that has no returned manifest yet is done;
with --copy K the copy is (re)done even if it was returned before. Copies run one after another in this process
(one copy in flight); `runner.parallel_copies` starts several such processes. Started by `accelerate launch`
(client.accelerate_config), all its processes train each copy together and the first one returns it.

This module never imports the server (mpu_cli.mpu): the client cannot reach seeds, α, σ or θ.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mpu_cli.transport import exchange as ex
from mpu_cli.transport.exchange import TransportError

CLIENT_KEYS = ("algorithm", "client", "data", "format", "dtype")


class ClientError(Exception):
    """Bad input: one line, exit code 2."""


def _read_config(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ClientError(f"--config {path}: no such file")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ClientError(f"--config {path}: not valid JSON ({e})") from None
    missing = [k for k in CLIENT_KEYS if k not in cfg]
    if missing:
        raise ClientError(f"--config {path}: missing {missing}; expected keys {list(CLIENT_KEYS)}")
    return cfg


def read_published(exchange: Path, r: int, k: int, run_id: str, skeleton_spec: dict) -> tuple[Mapping, dict]:
    """One published copy, validated against its manifest and against the public architecture, then read lazily
    (a tensor at a time, as the server reads returned copies): loading it into the model never holds a second
    whole copy."""
    what = ex.where(r, k)
    d = ex.copy_dir(exchange, r, k)
    m = ex.read_json(d / ex.PUBLISHED_MANIFEST, what)
    ex.check_manifest_identity(m, "published", run_id, r, k, what)
    table = m.get("tensors", {})
    expected = {}
    for name, shape in skeleton_spec.items():
        code = table.get(name, {}).get("dtype", "F32")
        if not ex.is_float_code(code):
            raise TransportError(f"{what}: {name!r} is published as {code}, a floating dtype is required")
        expected[name] = (shape, (code,))
    ex.read_validated(d / ex.PUBLISHED, m, expected, what, load=False)
    return ex.LazyStateDict(d / ex.PUBLISHED, list(expected)), m


def cmd_unlearn(args) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mpu_cli.data.formatting import ChatFormat, pad_id
    from mpu_cli.evals import benchmarks
    from mpu_cli.models.io import load_tokenizer, resolve_dtype
    from mpu_cli.unlearn import accel
    from mpu_cli.unlearn.algorithms import build_algorithm
    from mpu_cli.unlearn.client import ClientConfig, unlearn_copy
    from mpu_cli.options import check_settings
    from mpu_cli.unlearn.settings import LoraSettings, ReferencePolicy, check_lora

    if args.threads:
        torch.set_num_threads(args.threads)
    exchange = Path(args.exchange).resolve()
    cfg = _read_config(Path(args.config))
    r = args.round or ex.latest_round(exchange)
    marker = ex.read_round(exchange, r)
    n, run_id = marker["n_copies"], marker.get("run_id")
    copies = args.copy if args.copy else [k for k in range(n) if not ex.is_returned(exchange, r, k)]
    bad = [k for k in copies if not 0 <= k < n]
    if bad:
        raise ClientError(f"--copy {bad[0]} is not a copy of round {r} (copies 0..{n - 1})")
    if not copies:
        print(f"mpu-client: round {r}: every copy is already returned")
        return

    try:
        dtype = resolve_dtype(cfg["dtype"])
        algorithm = build_algorithm(cfg["algorithm"]["name"], cfg["algorithm"].get("params") or {})
        client_cfg = ClientConfig(**cfg["client"])
        check_settings(client_cfg, ClientConfig, "client.")  # types, choices and ranges, as mpu-run's schema checks
        check_settings(client_cfg.lora, LoraSettings, "client.lora.")
        if client_cfg.lora.enabled:
            check_lora(client_cfg)
    except (TypeError, ValueError) as e:
        raise ClientError(f"--config: {e}") from None
    if client_cfg.reference != ReferencePolicy.client_copy:
        raise ClientError(f"client.reference={client_cfg.reference!r}: over the file transport the client never "
                          f"receives the server's θ; accepted: 'client_copy'")
    client_cfg.seed = cfg["client"].get("seed", 0) + r  # as in the in-process runner: a fresh stream per round

    public = exchange / ex.PUBLIC_DIR
    if not (public / "config.json").exists():
        raise TransportError(f"{public}: config.json (the public architecture) is missing")
    tokenizer = load_tokenizer(str(public))
    fmt = ChatFormat(**cfg["format"])
    data = benchmarks.of(cfg["data"]).client_data(tokenizer, fmt, cfg["data"], algorithm)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(public)), dtype=dtype)
    spec = {name: tuple(t.shape) for name, t in model.state_dict().items()}

    for k in copies:
        t0 = time.perf_counter()
        published, manifest = read_published(exchange, r, k, run_id, spec)
        updated = unlearn_copy(model, published, algorithm, data, client_cfg, pad_id(tokenizer), None,
                               desc=f"round {r} copy {k + 1}/{n}")
        del published
        if accel.is_main_process():  # under `accelerate launch`: the first process returns the copy, once
            # a LoRA adapter goes back with its config (peft's two files)
            ex.write_returned(exchange, manifest, updated, getattr(updated, "config", None))
            print(f"mpu-client: round {r} copy {k} returned ({time.perf_counter() - t0:.1f}s)", flush=True)
        del updated


DESCRIPTION = """The MPU client party as its own process (the file transport; `mpu-run transport=files` drives it).
It reads the published copies of a round from the exchange folder, runs its unlearning algorithm on each with
its own private data and returns the updated copies there; it never sees θ nor the server's secrets.

  mpu-client unlearn --exchange RUN/exchange --config RUN/CLIENT.json            every copy not yet returned
  mpu-client unlearn --exchange RUN/exchange --config RUN/CLIENT.json --copy 2   (re)do copy 2 only
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpu-client", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{unlearn}")
    u = sub.add_parser("unlearn", help="run the unlearning algorithm on published copies",
                       description="Unlearn the published copies of a round and return each (returned.safetensors, "
                       "then returned_manifest.json).")
    u.add_argument("--exchange", required=True, help="the exchange folder (published copies, public/ model)")
    u.add_argument("--config", required=True,
                   help=f"CLIENT.json with {', '.join(CLIENT_KEYS)}: the algorithm, the client settings "
                   "(lr, epochs, batch size, …), its data, the chat format and the training dtype")
    u.add_argument("--round", type=int, default=None, help="default: the latest published round")
    u.add_argument("--copy", type=int, action="append", default=None,
                   help="copy index (repeatable); default: every copy not yet returned")
    u.add_argument("--threads", type=int, default=None, help="torch CPU threads of this process (default: torch's)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "unlearn":
            cmd_unlearn(args)
    except (ClientError, TransportError, FileNotFoundError) as e:
        print(f"mpu-client: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # the copies returned so far stay returned; the others are redone on resume
        print("mpu-client: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
