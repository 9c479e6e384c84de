"""Stage checkpoints of an in-process run, all under RUN/server_private/ (never an exchange folder): the server's
private state in the one format of run/server_state.py (state.json, theta_r{r}.safetensors, round_{r}.json —
the same files `mpu-server` keeps), plus the client's returned copies of the pending round:

    round_{r}/published_{k}.safetensors  the published copy θ_pub^(k), written by the server's streaming publish,
                                     read by the client (a published round's copies are written again on resume)
    round_{r}/copy_{k}.safetensors   the returned copy θ̃^(k) (fp32)
    round_{r}/copy_{k}.json          its marker, written after the file: SHA-256 and the round it belongs to

Order of writes: publish → the round's secrets and state.json (pending) before any client work, then the published
copies; each returned copy → file, then marker; aggregate → θ_r, then state.json (the commit point), then θ_{r-1},
the round's secrets and round_{r}/ are removed. A returned copy is accepted only with its marker and a matching
SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from mpu_cli.faults import inject
from mpu_cli.files import atomic_write_json
from mpu_cli.run.server_state import ServerState
from mpu_cli.transport import exchange as ex

log = logging.getLogger(__name__)


def _token(round_seed) -> str:
    """Binds a returned copy to its round's secrets without repeating them."""
    return hashlib.sha256(f"round-seed:{round_seed}".encode()).hexdigest()[:16]


class Checkpoint:
    def __init__(self, out: Path):
        self.store = ServerState(Path(out) / "server_private")
        self.dir = self.store.dir
        self.state_path = self.store.path

    # ---- state --------------------------------------------------------------------------------------------------

    def load(self) -> dict | None:
        """The saved state with the pending round's seed (None: nothing saved yet)."""
        if not self.store.exists():
            return None
        st = self.store.read()
        if st["pending"]:
            st = st | {"round_seed": self.store.round_secrets(st["round"])["round_seed"]}
        return st

    def theta(self, st: dict) -> dict | None:
        """θ of the state (None: θ_0, the target), checked against its recorded SHA-256."""
        return self.store.theta(st)

    def meta(self, st: dict) -> dict:
        """`MPUServer.restore` metadata from a state."""
        return self.store.restore_meta(st)

    def published(self, server, st: dict | None) -> dict:
        """Round r was just published: record its secrets before any client sees a copy. Copies left by an
        earlier, uncommitted publication of any round are dropped (they could not be aggregated anyway)."""
        new = self.store.published(server, st)
        for old in self.dir.glob("round_*"):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return new | {"round_seed": server.export_state()[1]["round_seed"]}

    def write_published(self, server) -> list[ex.LazyStateDict]:
        """The pending round's m copies streamed to round_{r}/published_{k}.safetensors; each is handed to the
        client lazily (its tensors read as the client's model takes them)."""
        paths = [self.dir / f"round_{server.round}" / f"published_{k}.safetensors" for k in range(server.n_copies)]
        for path in paths:
            inject("save_tensors", path)
        server.write_copies(paths)
        return [ex.LazyStateDict(p) for p in paths]

    def theta_path(self, r: int) -> Path:
        """Where the server's aggregate writes θ_r (the state's own θ file)."""
        return self.store.theta_path(r)

    def commit_round(self, server, st: dict | None) -> dict:
        """Round r was aggregated: θ_r, then the state (commit point), then drop θ_{r-1} and the round's copies."""
        new = self.store.commit(server, st or {})
        shutil.rmtree(self.dir / f"round_{server.round}", ignore_errors=True)
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
