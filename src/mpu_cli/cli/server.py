"""mpu-server: the server party as its own process (the commands are transport/server.py's).

    mpu-server init      --state DIR --exchange DIR --target MODEL [--base MODEL] [--tokenizer PATH] [--dtype D]
                         [--config SERVER.json] [--arm A] [--kappa K] [--m M] [--alpha-schedule S] …
    mpu-server publish   --state DIR [--exchange DIR]     Pre-Process of the next round -> exchange/round_r/
    mpu-server aggregate --state DIR [--exchange DIR]     validate every returned copy, then Post-Process -> θ_r
    mpu-server status    --state DIR                      public facts (round, pending, m, κ, exposed fraction)

init's settings are a ServerConfig (mpu/settings.py): SERVER.json (`mpu-run transport=files` writes one into
the private state folder), then one option per setting given on the command line. The seed is read from
SERVER.json only: a command line is visible to every user of the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mpu_cli.files import DISK_FULL
from mpu_cli.mpu.settings import ServerConfig, option_types
from mpu_cli.run.server_state import ServerStateError
from mpu_cli.transport import server as party
from mpu_cli.transport.errors import TransportError

DESCRIPTION = """The MPU server party as its own process (the file transport; `mpu-run transport=files` drives it).
It owns the exact model θ and the round secrets (--state, private) and exchanges only files with the client
(--exchange): init, then per round publish (m perturbed copies) -> the client unlearns them -> aggregate.

  mpu-server init --state RUN/server_private --exchange RUN/exchange --target MODEL --base BASE --m 2 --kappa 0.01
  mpu-server publish --state RUN/server_private
  mpu-client unlearn --exchange RUN/exchange --config CLIENT.json
  mpu-server aggregate --state RUN/server_private
"""


def _settings_options(p: argparse.ArgumentParser) -> list[str]:
    """One option per public field of ServerConfig, its meaning and default from the type; returns the fields."""
    types, defaults = option_types(), ServerConfig()
    names = []
    for f in fields(ServerConfig):
        if f.metadata.get("secret"):
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        shown = str(default).lower() if isinstance(default, bool) else default
        meaning = f"{f.metadata['help']} (default: {shown})"
        if types[f.name] is bool:
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=meaning)
        else:  # accepted values are in the meaning, not enforced here: ServerConfig refuses a bad one in one line
            p.add_argument(flag, dest=f.name, type=types[f.name], default=None, help=meaning)
        names.append(f.name)
    return names


def parser() -> argparse.ArgumentParser:
    from mpu_cli.models.io import DTYPES

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
    i.add_argument("--dtype", default="float32",
                   help=f"training / publishing dtype: {' | '.join(DTYPES)} (default: %(default)s)")
    i.add_argument("--config", default=None,
                   help="SERVER.json: the server settings, the seed included (the options below override it)")
    i.set_defaults(settings=_settings_options(i))
    for name, what in (("publish", "Pre-Process of the next round: the m copies -> exchange/round_r/"),
                       ("aggregate", "validate every returned copy, then Post-Process -> θ_r")):
        c = sub.add_parser(name, help=what, description=what)
        c.add_argument("--state", required=True, help="the private state folder given to init")
        c.add_argument("--exchange", default=None, help="default: the folder given to init")
    s = sub.add_parser("status", help="public facts: round, pending, m, κ, exposed fraction (JSON)",
                       description="Print the server's public facts as JSON (no secret).")
    s.add_argument("--state", required=True, help="the private state folder given to init")
    return p


def _init(args) -> None:
    try:
        settings = ServerConfig.read(args.config, {name: getattr(args, name) for name in args.settings})
    except (TypeError, ValueError) as e:
        raise party.ServerError(str(e)) from None
    party.init(args.state, args.exchange, args.target, settings, base=args.base, tokenizer=args.tokenizer,
                dtype=args.dtype)


COMMANDS = {
    "init": _init,
    "publish": lambda args: party.publish(args.state, args.exchange),
    "aggregate": lambda args: party.aggregate(args.state, args.exchange),
    "status": lambda args: print(json.dumps(party.status(args.state))),
}


def _fault(e: BaseException) -> bool:
    """Not the command's input but what happened to the state or the disk: exit code 1 (bad input: 2)."""
    return isinstance(e, ServerStateError) or (isinstance(e, OSError) and e.errno in DISK_FULL)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (party.ServerError, ServerStateError, TransportError, OSError) as e:  # OSError: a model path that cannot be opened
        print(f"mpu-server: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1 if _fault(e) else 2)
    except KeyboardInterrupt:  # every stage commits atomically: the state is the last committed one
        print("mpu-server: interrupted (SIGINT)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
