"""Server memory does not grow with m: a census of the tensors the server creates while it publishes and
aggregates a round, for m = 2 and m = 8 copies of the tiny model.

The census is a TorchFunctionMode that sees every tensor produced by a torch call inside the measured block,
counts the bytes of each new storage while a Python tensor still refers to it (released through a weakref
finalizer) and keeps the peak. Storages that exist before the block (θ, the public base, the caller's
returned copies) are excluded: what is measured is the server's own working set, in units of one full model.
publish() returning m copies is by design the caller's memory; write_copies() streams them to files one tensor
name at a time, holding the m zero-sum draws of one tensor (ZeroSumNoise's kept draws) and one version.
"""
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from mpu_cli.models.io import state_dict_fp32
from mpu_cli.models.tiny import init_tiny_llama, load_embedded_tokenizer
from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.server import MPUServer, ServerConfig

# Allowed growth of the peak from m = 2 to m = 8, in full-model units. A server holding the m copies (or the m
# updates, or m noise tensors of the whole model) grows by >= 6 units; one holding all m versions of one
# tensor at a time grows by 6 x (largest tensor / model) ~ 0.7 on the tiny model. The streaming passes keep
# the m draws of one block tensor (6 more x the largest block tensor: ~0.28 here, ~0.08 at Llama-3.2-1B).
TOLERANCE = 0.1


class TensorCensus(TorchFunctionMode):
    """Peak and current bytes of live CPU tensor storages created inside the `with` block."""

    def __init__(self, existing=()):
        super().__init__()
        self.excluded = {t.untyped_storage().data_ptr() for t in existing}
        self.live: dict[int, list] = {}
        self.current = self.peak = 0

    def _release(self, ptr):
        entry = self.live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[ptr]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr == 0 or ptr in self.excluded:
                continue
            entry = self.live.get(ptr)
            if entry is None:
                entry = self.live[ptr] = [storage.nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out


@pytest.fixture(scope="module")
def tiny():
    tok = load_embedded_tokenizer()
    model = init_tiny_llama(tok, seed=1)
    theta = state_dict_fp32(model)
    base = state_dict_fp32(init_tiny_llama(tok, seed=2))
    return theta, base, ModelLayout.from_hf_config(model.config), sum(t.nbytes for t in theta.values())


def _kept_draws(tiny) -> float:
    """The growth from m = 2 to m = 8 of the m zero-sum draws kept for one tensor: 6 x the largest block tensor."""
    theta, _, _, model_bytes = tiny
    return 6 * max(t.nbytes for n, t in theta.items() if ".layers." in n) / model_bytes


def _server(tiny, m):
    theta, base, layout, _ = tiny
    return MPUServer(theta, layout, ServerConfig(arm="mpu", m=m, kappa=0.1, seed=0), base=base)


def _held(server) -> int:
    """Bytes of the distinct tensor storages reachable from the server object (its retained state)."""
    seen, total, stack, visited = set(), 0, [server], set()
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, torch.Tensor):
            ptr = obj.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += obj.untyped_storage().nbytes()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())
    return total


def _measure(tiny, m, folder) -> dict:
    theta, base, _, model_bytes = tiny
    server = _server(tiny, m)
    existing = [*theta.values(), *base.values(), *server.theta.values()]
    held = {"init": _held(server)}
    with TensorCensus(existing) as publish:
        server.publish_copies()
        server.write_copies([folder / f"m{m}_copy{k}.safetensors" for k in range(m)])
    held["published"] = _held(server)
    # The client's returned copies: caller memory, built outside the census.
    returned = [{n: t + 1e-3 for n, t in c.items()} for c in _server(tiny, m).publish()]
    existing += [t for r in returned for t in r.values()]
    with TensorCensus(existing) as aggregate:
        server.aggregate(returned)
    held["aggregated"] = _held(server)
    # Whole copies one at a time (the in-process runner): the client trains copy k, then drops it.
    by_copy = _server(tiny, m)
    with TensorCensus([*theta.values(), *base.values(), *by_copy.theta.values()]) as one_at_a_time:
        copies = by_copy.publish_copies()
        for k in range(len(copies)):
            copy = copies[k]
            del copy
    return {"publish_peak": publish.peak / model_bytes, "aggregate_peak": aggregate.peak / model_bytes,
            "copies_peak": one_at_a_time.peak / model_bytes,
            "held": {k: v / model_bytes for k, v in held.items()}}


def test_census_sees_a_full_copy():
    """The instrument itself: a full model copy made inside the block counts as 1.0, and its release."""
    theta = {f"t{i}": torch.randn(100, 100) for i in range(4)}
    size = sum(t.nbytes for t in theta.values())
    with TensorCensus(theta.values()) as census:
        copy = {n: t.clone() for n, t in theta.items()}
        views = [t.view(-1) for t in copy.values()]  # views share the storage: not counted twice
        del copy, views
    assert census.peak == size and census.current == 0


@pytest.fixture(scope="module")
def measured(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("copies")
    return _measure(tiny, 2, folder), _measure(tiny, 8, folder)


def test_server_state_does_not_grow_with_m(measured):
    small, large = measured
    report = f"m=2: {small}\nm=8: {large}"
    # Retained between calls: θ and the public base, whatever m is; per copy only the round's secrets
    # (a permutation of d_ff and d_h/2 angles per block: ~0.3 % of the tiny model, 0.02 % of Llama-3.2-1B).
    for stage in ("init", "published", "aggregated"):
        assert large["held"][stage] - small["held"][stage] <= 0.05, report
    assert small["held"]["aggregated"] <= 2.01, report  # θ + base, nothing per copy


def test_server_working_set_does_not_grow_with_m(measured, tiny):
    small, large = measured
    report = f"m=2: {small}\nm=8: {large}"
    assert large["publish_peak"] - small["publish_peak"] <= TOLERANCE + _kept_draws(tiny), report
    assert large["aggregate_peak"] - small["aggregate_peak"] <= TOLERANCE + _kept_draws(tiny), report
    assert large["aggregate_peak"] <= 1.0 + 2 * TOLERANCE + small["publish_peak"], report  # one accumulator
    # one copy in flight + the round's zero-sum means (one model size) + one tensor's temporaries
    assert large["copies_peak"] - small["copies_peak"] <= TOLERANCE, report
    assert large["copies_peak"] <= 2.0 + 2 * TOLERANCE, report
