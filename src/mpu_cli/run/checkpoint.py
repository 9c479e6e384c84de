"""Stage checkpoints of an in-process run, all under RUN/server_private/ (never an exchange folder):

    state.json                   round, pending, the current θ file and its SHA-256, and — while a round is
                                 pending — its round seed and σ (the secrets a resumed run needs to regenerate the
                                 published copies and to aggregate the copies already returned)
    theta_r{r}.safetensors       the exact θ_r (fp32) after round r; no file for θ_0 (it is the target)
    round_{r}/copy_{k}.safetensors   the client's returned copy θ̃^(k) of the pending round (fp32)
    round_{r}/copy_{k}.json          its marker, written after the file: SHA-256 and the round it belongs to

Order of writes: publish → state.json (pending, secrets) before any client work; each returned copy → file, then
marker; aggregate → θ_r file, then state.json (the commit point), then θ_{r-1} and round_{r}/ are removed.
Every file is written atomically; a file is accepted only with its marker and a matching SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from mpu_cli.faults import inject
from mpu_cli.files import PRIVATE_MARKER, atomic_write_json, make_private
from mpu_cli.transport import exchange as ex

log = logging.getLogger(__name__)

STATE_FORMAT = "mpu-run-checkpoint/1"


def _token(round_seed) -> str:
    """Binds a returned copy to its round's secrets without repeating them."""
    return hashlib.sha256(f"round-seed:{round_seed}".encode()).hexdigest()[:16]


class Checkpoint:
    def __init__(self, out: Path):
        self.dir = Path(out) / "server_private"
        self.state_path = self.dir / "state.json"

    def _private(self) -> None:
        if not (self.dir / PRIVATE_MARKER).exists():
            make_private(self.dir)  # θ and the round secrets: owner only

    # ---- state --------------------------------------------------------------------------------------------------

    def load(self) -> dict | None:
        if not self.state_path.exists():
            return None
        st = json.loads(self.state_path.read_text(encoding="utf-8"))
        if st.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path}: format {st.get('format')!r}, expected {STATE_FORMAT!r}")
        return st

    def theta(self, st: dict) -> dict | None:
        """θ of the state (None: θ_0, the target), checked against its recorded SHA-256."""
        from safetensors.torch import load_file

        if not st.get("theta_file"):
            return None
        path = self.dir / st["theta_file"]
        digest, _ = ex.sha256_file(path)
        if digest != st["theta_sha256"]:
            raise ValueError(f"{path}: SHA-256 does not match {self.state_path}; the checkpoint is damaged")
        return load_file(str(path))

    @staticmethod
    def meta(st: dict) -> dict:
        """`MPUServer.restore` metadata from a state."""
        return {"round": st["round"], "pending": st["pending"], "round_seed": st.get("round_seed"),
                "sigmas": st.get("sigmas"), "config": st["config"], "noise_reference": st["noise_reference"],
                "dtypes": {n: ex.torch_dtype(c) for n, c in st["dtypes"].items()}, "aliases": st["aliases"]}

    def _write_state(self, server, theta_file: str | None, theta_sha: str | None) -> dict:
        self._private()
        _, meta = server.export_state()
        st = {"format": STATE_FORMAT, "round": meta["round"], "pending": meta["pending"],
              "round_seed": meta["round_seed"] if meta["pending"] else None,
              "sigmas": meta["sigmas"] if meta["pending"] else None,
              "theta_file": theta_file, "theta_sha256": theta_sha, "config": meta["config"],
              "noise_reference": meta["noise_reference"],
              "dtypes": {n: ex.dtype_code(d) for n, d in meta["dtypes"].items()}, "aliases": meta["aliases"]}
        atomic_write_json(self.state_path, st)
        return st

    def published(self, server, st: dict | None) -> dict:
        """Round r was just published: record its secrets before any client sees a copy. Copies left by an
        earlier, uncommitted publication of any round are dropped (they could not be aggregated anyway)."""
        new = self._write_state(server, st and st.get("theta_file"), st and st.get("theta_sha256"))
        for old in self.dir.glob("round_*"):
            shutil.rmtree(old, ignore_errors=True)
        return new

    def commit_round(self, server, st: dict | None) -> dict:
        """Round r was aggregated: θ_r, then the state (commit point), then drop θ_{r-1} and the round's copies."""
        r = server.round
        name = f"theta_r{r}.safetensors"
        inject("save_tensors", self.dir / name)
        info = ex.write_safetensors(self.dir / name, server.theta)
        new = self._write_state(server, name, info["sha256"])
        old = st and st.get("theta_file")
        if old and old != name:
            (self.dir / old).unlink(missing_ok=True)
        shutil.rmtree(self.dir / f"round_{r}", ignore_errors=True)
        return new

    # ---- returned copies --------------------------------------------------------------------------------------

    def _copy_paths(self, r: int, k: int) -> tuple[Path, Path]:
        d = self.dir / f"round_{r}"
        return d / f"copy_{k}.safetensors", d / f"copy_{k}.json"

    def save_returned(self, st: dict, k: int, tensors: dict) -> None:
        path, marker = self._copy_paths(st["round"], k)
        inject("save_tensors", path)
        info = ex.write_safetensors(path, tensors)
        atomic_write_json(marker, {"round": st["round"], "copy": k, "sha256": info["sha256"],
                                   "round_token": _token(st["round_seed"])})  # marker last

    def load_returned(self, st: dict, k: int) -> ex.LazyStateDict | None:
        """The returned copy k of the pending round, checked and opened lazily (each tensor read when the
        server's streaming aggregate asks for it), or None when it is not (completely) there."""
        path, marker = self._copy_paths(st["round"], k)
        if not (marker.exists() and path.exists()):
            return None
        m = json.loads(marker.read_text(encoding="utf-8"))
        if m.get("round_token") != _token(st["round_seed"]) or m.get("round") != st["round"]:
            log.warning("%s belongs to another publication of round %d; the copy is redone", path, st["round"])
            return None
        digest, _ = ex.sha256_file(path)
        if digest != m.get("sha256"):
            log.warning("%s: SHA-256 does not match its marker; the copy is redone", path)
            return None
        return ex.LazyStateDict(path)
