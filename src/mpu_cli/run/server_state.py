"""The server's private state on disk, in one format (`mpu-server-state/1`) written by both the in-process run's
stage checkpoint (run/checkpoint.py) and the `mpu-server` process (transport/server.py):

    state.json              format, round, pending, the current θ file and its SHA-256 (null: θ is still θ_0, the
                            target the server was started from), the server config, the effective noise reference,
                            the layout, the published dtypes and tied-tensor aliases; a writer may add its own facts
                            (mpu-server: the exchange folder, the model paths)
    theta_r{r}.safetensors  the exact θ_r (fp32) once round r is committed
    round_{r}.json          the secrets of the pending round r: its round seed (α, noise streams and transforms derive
                            from it) and σ per block, plus what the writer adds (mpu-server: the SHA-256 of each
                            published copy); removed once round r is committed
    noise_survival.json     per published round: how much of each copy's noise survived the cast to the published
                            dtype (mpu/survival.py), per block and overall; kept for the run's results.csv

Order: publish → round_{r}.json → state.json (pending); aggregate → θ_r → state.json (the commit point) → θ_{r-1}
and round_{r}.json are removed. Every file is written atomically, the folder is the owner's only (0700, 0600).
This module imports the server (mpu/) but never the client or the data.
"""
from __future__ import annotations

import json
from pathlib import Path

from mpu_cli.files import PRIVATE_MARKER, append_line, atomic_write_json, make_private, seal_private
from mpu_cli.transport import exchange as ex

FORMAT = "mpu-server-state/1"
STATE = "state.json"
SURVIVAL = "noise_survival.json"


class ServerStateError(ValueError):
    """The private state is missing, of another format, or damaged (a file gone, truncated or altered): one
    line that names the file and says what a resume can still do."""


# What a damaged state leaves the user: the completed rounds are in it, so nothing short of a fresh start helps.
DAMAGED_HINT = ("resume=true cannot continue from this server state; start the run again (overwrite=true, or "
                "another run directory)")
_STATE_KEYS = ("format", "round", "pending", "config", "noise_reference", "layout", "dtypes", "aliases")


def _damaged(path: Path, why: str) -> ServerStateError:
    return ServerStateError(f"{path} {why}: {DAMAGED_HINT}")


def _read_json(path: Path, what: str) -> dict:
    """A JSON object of the state, or ServerStateError naming the damaged file."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged(path, f"is missing ({what} is gone)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(path, f"is damaged ({what}: {' '.join(str(e).split())})") from None
    if not isinstance(obj, dict):
        raise _damaged(path, f"is damaged ({what}: not a JSON object)")
    return obj


def current_round(round_: int, pending: bool) -> int:
    """The round the next step works on: the published round awaiting aggregation when one is pending, else the
    next one to publish (a server at round r has committed rounds 1..r)."""
    return round_ if pending else round_ + 1


def theta_name(r: int) -> str:
    return f"theta_r{r}.safetensors"


class ServerState:
    def __init__(self, folder: Path):
        self.dir = Path(folder)
        self.path = self.dir / STATE

    def exists(self) -> bool:
        return self.path.exists()

    def _private(self) -> None:
        if not (self.dir / PRIVATE_MARKER).exists():
            make_private(self.dir)  # θ and the round secrets: owner only

    # ---- state.json -----------------------------------------------------------------------------------------

    def read(self) -> dict:
        if not self.path.exists():
            raise ServerStateError(f"{self.dir}: no server state ({STATE} missing)")
        st = _read_json(self.path, "the server's state")
        if st.get("format") != FORMAT:
            raise ServerStateError(f"{self.path}: format {st.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in _STATE_KEYS if k not in st]
        if missing:
            raise _damaged(self.path, f"is damaged (no {', '.join(missing)})")
        # the files the state stands on, checked here so that no command starts on a state missing one
        if st.get("theta_file") and not (self.dir / st["theta_file"]).is_file():
            raise _damaged(self.dir / st["theta_file"], "is missing (the server's θ is gone)")
        if st["pending"] and not self.round_secrets_path(st["round"]).is_file():
            raise _damaged(self.round_secrets_path(st["round"]),
                           f"is missing (the secrets of round {st['round']}, without which it cannot be aggregated)")
        return st

    def write(self, server, base: dict | None = None, **fields) -> dict:
        """state.json from the server as it is now; `base` carries the previous state's facts (θ file, the
        writer's own fields), `fields` overrides them."""
        self._private()
        _, meta = server.export_state()
        secret = ("round_seed", "sigmas")  # the round's secrets live in round_{r}.json only
        st = {k: v for k, v in (base or {}).items() if k not in secret} | {
            "format": FORMAT, "round": meta["round"], "pending": meta["pending"], "config": meta["config"],
            "noise_reference": meta["noise_reference"], "layout": dict(server.layout.__dict__),
            "dtypes": {n: ex.dtype_code(d) for n, d in meta["dtypes"].items()}, "aliases": meta["aliases"],
        }
        st.setdefault("theta_file", None)
        st.setdefault("theta_sha256", None)
        st |= fields
        atomic_write_json(self.path, st)
        return st

    def log(self, command: str, r: int, seconds: float) -> None:
        """log.jsonl: one line per command, owner-only like every file here."""
        self._private()
        append_line(self.dir / "log.jsonl", json.dumps({"command": command, "round": r, "seconds": round(seconds, 4)}))

    def save_model_config(self, config) -> None:
        """model_config/: the target's config.json, for reference (owner-only: it describes the private model)."""
        self._private()
        folder = self.dir / "model_config"
        folder.mkdir(mode=0o700, exist_ok=True)
        config.save_pretrained(str(folder))
        seal_private(folder)

    # ---- θ --------------------------------------------------------------------------------------------------

    def theta(self, st: dict):
        """θ of the state, checked against its recorded SHA-256, read one tensor at a time when used
        (models.files.TensorFiles); None: θ_0, the target."""
        from mpu_cli.models.files import open_file

        if not st.get("theta_file"):
            return None
        path = self.dir / st["theta_file"]
        if not path.exists():
            raise _damaged(path, "is missing (the server's θ is gone)")
        try:
            digest, _ = ex.sha256_file(path)
        except ex.TransportError as e:  # not a regular file
            raise _damaged(path, f"cannot be read ({e})") from None
        if digest != st["theta_sha256"]:
            raise _damaged(path, f"does not match the SHA-256 recorded in {self.path} (the server's θ was altered)")
        return open_file(path)

    def theta_path(self, r: int) -> Path:
        """Where θ_r goes: a server streaming its aggregate writes it there itself (`MPUServer.aggregate(out=)`).
        The temporary file of an aggregate killed while writing it is removed (one process owns this folder)."""
        from mpu_cli.faults import inject

        self._private()
        path = self.dir / theta_name(r)
        for stale in self.dir.glob(f".{path.name}.*.tmp"):
            stale.unlink()
        inject("save_tensors", path)
        return path

    def write_theta(self, r: int, theta) -> dict:
        """θ_r to its file; returns the state fields that name it."""
        info = ex.write_safetensors(self.theta_path(r), theta)
        return {"theta_file": theta_name(r), "theta_sha256": info["sha256"]}

    def _theta_fields(self, server) -> dict:
        """The state fields of the server's θ_r: the file its aggregate wrote, else θ_r written now."""
        r, written = server.round, server.theta_file
        if written is not None and Path(written["path"]) == self.dir / theta_name(r):
            return {"theta_file": theta_name(r), "theta_sha256": written["sha256"]}
        return self.write_theta(r, server.theta)

    # ---- rounds ---------------------------------------------------------------------------------------------

    def round_secrets_path(self, r: int) -> Path:
        return self.dir / f"round_{r}.json"

    def write_round_secrets(self, server, **fields) -> dict:
        """The pending round's secrets, written before the state says the round is pending."""
        self._private()
        _, meta = server.export_state()
        secrets = {"round": meta["round"], "round_seed": meta["round_seed"], "sigmas": meta["sigmas"]} | fields
        atomic_write_json(self.round_secrets_path(meta["round"]), secrets)
        return secrets

    def round_secrets(self, r: int) -> dict:
        return _read_json(self.round_secrets_path(r), f"the secrets of round {r}, without which it cannot be "
                          "aggregated")

    def published(self, server, st: dict | None, **secret_fields) -> dict:
        """Round r was just published: its secrets, then the state (pending), before any client sees a copy."""
        self.write_round_secrets(server, **secret_fields)
        return self.write(server, st)

    def commit(self, server, st: dict) -> dict:
        """Round r was aggregated: θ_r, then the state (the commit point), then θ_{r-1} and the round's secrets
        go."""
        r = server.round
        new = self.write(server, st, **self._theta_fields(server))
        old = st.get("theta_file")
        if old and old != new["theta_file"]:
            (self.dir / old).unlink(missing_ok=True)
        self.round_secrets_path(r).unlink(missing_ok=True)
        return new

    # ---- the noise that survives publication ------------------------------------------------------------------

    def survival(self) -> list[dict]:
        """The published rounds' survival records (mpu/survival.py), in round order; [] when there is none."""
        path = self.dir / SURVIVAL
        if not path.exists():
            return []
        rounds = _read_json(path, "the noise survival record").get("rounds", {})
        return [rounds[r] for r in sorted(rounds, key=int)]

    def record_survival(self, server) -> None:
        """The pending round's survival record, measured once (a resumed round has the same copies)."""
        self._private()
        path = self.dir / SURVIVAL
        rounds = _read_json(path, "the noise survival record").get("rounds", {}) if path.exists() else {}
        if str(server.round) not in rounds:
            rounds[str(server.round)] = server.noise_survival()
            atomic_write_json(path, {"rounds": rounds})

    def restore_meta(self, st: dict) -> dict:
        """`MPUServer.restore` metadata of the state, the pending round's secrets included."""
        meta = {"round": st["round"], "pending": st["pending"], "round_seed": None, "sigmas": None,
                "config": st["config"], "noise_reference": st["noise_reference"],
                "dtypes": {n: ex.torch_dtype(c) for n, c in st["dtypes"].items()}, "aliases": st["aliases"]}
        if st["pending"]:
            secrets = self.round_secrets(st["round"])
            meta["round_seed"], meta["sigmas"] = secrets["round_seed"], secrets["sigmas"]
        return meta
