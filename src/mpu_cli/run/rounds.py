"""The round loop of MPU, written once: R times publish → the client unlearns each copy → aggregate → commit.

`drive(rounds, R)` runs it over a backend that carries out the steps:

- `InProcessRounds`: server (MPUServer) and client (a function unlearning one copy) are calls in this process.
  With a stage checkpoint (run/checkpoint.py) the round's secrets are recorded before any client work, the server
  streams the m copies to files tensor by tensor, the client reads its copy from its file, every returned copy is
  saved and read back lazily and θ_r is written tensor by tensor, so server memory does not grow with the model
  nor with m, and a resumed run redoes only what was not returned; without one (the audit) copies are
  built one at a time in memory as the client takes them; `slots > 1` unlearns
  copies in forked CPU workers (run/slots.py). Without a checkpoint (the audit) returned copies stay
  in memory.
- `ProcessRounds` (run/processes.py): separate `mpu-server` / `mpu-client` processes exchanging files.

A backend resumes where its state says: a round published but not aggregated is continued with the same copies.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mpu_cli.faults import kill_point, set_scope
from mpu_cli.run.server_state import current_round
from mpu_cli.run.stage import set_stage

log = logging.getLogger(__name__)


def drive(rounds, total: int) -> tuple[dict, dict]:
    """Run rounds up to `total` on the backend; returns (the final exact θ, fp32; timings in seconds)."""
    for r in rounds.remaining(total):
        set_stage(f"round {r}/{total}: publishing the copies")
        rounds.publish(r)
        kill_point(f"round{r}_after_publish")  # fault-injection tests only (MPU_KILL_AT)
        set_stage(f"round {r}/{total}: the client unlearning the copies")
        rounds.unlearn(r, total)
        kill_point(f"round{r}_before_aggregate")
        set_stage(f"round {r}/{total}: aggregating")
        rounds.aggregate(r)
        kill_point(f"round{r}_after_aggregate")
    return rounds.result()


# unlearn_fn(r, k, published copy) -> the returned copy (fp32 tensors)
UnlearnFn = Callable[[int, int, dict], dict]


class InProcessRounds:
    def __init__(self, server, unlearn_fn: UnlearnFn, checkpoint=None, slots: int = 1,
                 on_commit: Callable[[object], None] | None = None,
                 aggregate: Callable[[list, object], object] | None = None, published: list | None = None):
        """aggregate(returned, out): Post-Process of what the client returned, writing θ_r to `out` when it is
        not None, as `server.aggregate(returned, out=out)` does (the default, whole copies; a LoRA client's
        adapters: mpu/lora_aggregate.py). published: the pending round's copies as the caller already holds them
        (e.g. read lazily from the files it wrote), used instead of building them again."""
        if slots > 1 and checkpoint is None:
            raise ValueError("parallel slots return their copies through the stage checkpoint: give one")
        self.server, self.unlearn_fn, self.ckpt, self.slots = server, unlearn_fn, checkpoint, slots
        self.aggregate_fn = aggregate
        self.published = published
        self.on_commit = on_commit
        self.state = checkpoint.load() if checkpoint is not None else None
        self.timings = {"server": 0.0, "client": 0.0}
        self.copies, self.returned = None, []

    def remaining(self, total: int) -> range:
        return range(current_round(self.server.round, self.server.pending), total + 1)

    def publish(self, r: int) -> None:
        t = time.perf_counter()
        if self.server.pending:  # resumed (or published by the caller) inside round r: the same copies again
            self.copies = self.published if self.published is not None else self.server.pending_copies()
        else:
            self.copies = self.server.publish_copies()
            if self.ckpt is not None:
                self.state = self.ckpt.published(self.server, self.state)  # the secrets, before any client work
        if self.ckpt is not None:
            self.copies = self.ckpt.write_published(self.server)
        self.timings["server"] += time.perf_counter() - t
        if self.ckpt is not None:  # a measurement, not part of Pre-Process: outside the server's time
            self.ckpt.store.record_survival(self.server)

    def _task(self, r: int, k: int, total: int) -> dict:
        """Build copy k (server time), unlearn it (client time), hand it back to the checkpoint."""
        t = time.perf_counter()
        published = self.copies[k]
        t_server = time.perf_counter() - t
        t = time.perf_counter()
        set_scope(f"round{r}_copy{k + 1}")
        set_stage(f"round {r}/{total}: the client unlearning copy {k + 1}/{len(self.copies)}")
        updated = self.unlearn_fn(r, k, published)
        del published
        set_scope(None)
        if self.ckpt is not None:
            self.ckpt.save_returned(self.state, k, updated)
            updated = None
        return {"server": t_server, "client": time.perf_counter() - t, "returned": updated}

    def unlearn(self, r: int, total: int) -> None:
        n = len(self.copies)
        saved = [self.ckpt.load_returned(self.state, k) for k in range(n)] if self.ckpt else [None] * n
        for k, done in enumerate(saved):
            if done is not None:  # returned before an interruption: not redone
                log.info("round %d copy %d/%d: reusing the returned copy saved before the interruption", r, k + 1, n)
        todo = [k for k, done in enumerate(saved) if done is None]
        if self.slots > 1:
            from mpu_cli.run.slots import run_in_slots

            t = time.perf_counter()
            spent = run_in_slots(lambda k: self._task(r, k, total), todo, self.slots)
            # The slots build their copies concurrently: server = the copies' build time summed over slots,
            # client = the section's wall time less each slot's average share of it.
            built = sum(s["server"] for s in spent)
            self.timings["server"] += built
            self.timings["client"] += time.perf_counter() - t - built / self.slots
            log.info("round %d: copies %s unlearned in %d parallel slots", r, [k + 1 for k in todo], self.slots)
        else:
            for k in todo:
                spent = self._task(r, k, total)
                self.timings["server"] += spent["server"]
                self.timings["client"] += spent["client"]
                saved[k] = spent["returned"]
                log.info("round %d copy %d/%d unlearned", r, k + 1, n)
                kill_point(f"round{r}_copy{k + 1}_done")
        if self.ckpt is not None:
            saved = [done if done is not None else self.ckpt.load_returned(self.state, k) for k, done in enumerate(saved)]
        missing = [k for k, x in enumerate(saved) if x is None]
        if missing:
            raise RuntimeError(f"round {r}: copies {missing} were not returned")
        self.returned = saved

    def aggregate(self, r: int) -> None:
        self.copies = None
        t = time.perf_counter()
        set_scope(f"round{r}")
        out = self.ckpt.theta_path(r) if self.ckpt is not None else None  # θ_r written there tensor by tensor
        if self.aggregate_fn is None:
            self.server.aggregate(self.returned, out=out)
        else:
            self.aggregate_fn(self.returned, out)
        set_scope(None)
        self.timings["server"] += time.perf_counter() - t
        self.returned = []
        if self.ckpt is not None:
            self.state = self.ckpt.commit_round(self.server, self.state)
        if self.on_commit is not None:
            self.on_commit(self.server)

    def result(self) -> tuple[dict, dict]:
        return self.server.theta, self.timings
