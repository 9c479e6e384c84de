"""The server's file I/O: the writer that writes and hashes in a background thread, the reader that reads a
published copy back while hashing it, and the finite check that settles most tensors by their sum."""
from __future__ import annotations

import hashlib

import pytest
import torch

from mpu_cli.finite import all_finite
from mpu_cli.transport import exchange as ex


def _spec(tensors: dict) -> dict:
    return {n: (tuple(t.shape), t.dtype) for n, t in tensors.items()}


def _tensors() -> dict:
    g = torch.Generator().manual_seed(0)
    # one block larger than the writer's waiting budget (1/16 of the file), many below it, an empty one
    out = {"big": torch.randn(4000, 64, generator=g)}
    out |= {f"small{i}": torch.randn(50, 64, generator=g).to(torch.bfloat16 if i % 2 else torch.float32)
            for i in range(40)}
    return out | {"empty": torch.empty(0, 3)}


def test_the_background_writer_writes_what_the_one_shot_writer_writes(tmp_path):
    tensors = _tensors()
    writer = ex.StreamingSafetensorsWriter([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], _spec(tensors))
    for name, t in tensors.items():
        writer.write(name, iter([t, t * 2]))
    infos = writer.commit()
    for path, scale, info in zip(("a", "b"), (1, 2), infos):
        data = (tmp_path / f"{path}.safetensors").read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        back = ex.LazyStateDict(tmp_path / f"{path}.safetensors")
        for name, t in tensors.items():
            assert torch.equal(back[name], t * scale), name
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_reaches_the_caller_and_leaves_no_file(tmp_path):
    tensors = {n: t for n, t in _tensors().items() if n.startswith("small")}  # all handed to the thread
    writer = ex.StreamingSafetensorsWriter([tmp_path / "a.safetensors"], _spec(tensors))
    writer._files[0].close()  # the file can no longer be written: the thread's next write fails
    with pytest.raises(ValueError):
        for name, t in tensors.items():
            writer.write(name, [t])
        writer.commit()
    writer.abort()
    assert not list(tmp_path.iterdir())


def _written(tmp_path, tensors) -> tuple:
    path = tmp_path / "pub.safetensors"
    return path, ex.write_safetensors(path, tensors)["sha256"]


def test_the_hashed_reader_gives_the_file_tensors_in_order_and_verifies_it(tmp_path):
    tensors = _tensors()
    path, sha = _written(tmp_path, tensors)
    reader = ex.HashedReader(path, sha)
    for name, t in tensors.items():
        got = reader.read(name)
        assert got is not None and got.dtype == t.dtype and torch.equal(got, t), name
    assert reader.verified()
    reader = ex.HashedReader(path, sha)  # skipped tensors are hashed all the same
    assert all(reader.skip(name) if i % 2 else reader.read(name) is not None for i, name in enumerate(tensors))
    assert reader.verified()


def test_the_hashed_reader_refuses_a_changed_file_or_another_order(tmp_path):
    tensors = _tensors()
    path, sha = _written(tmp_path, tensors)
    reader = ex.HashedReader(path, sha)
    assert reader.read("small0") is None  # not the next tensor of the file
    reader.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the last tensor's last byte
    path.write_bytes(bytes(data))
    for skip in (False, True):
        reader = ex.HashedReader(path, sha)
        assert all(reader.skip(name) if skip else reader.read(name) is not None for name in tensors)
        assert not reader.verified()
    path.unlink()
    reader = ex.HashedReader(path, sha)
    assert reader.read("big") is None and not reader.verified()


def test_all_finite_is_exact_when_the_sum_overflows():
    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.sum())  # the sum overflows: the element check decides
    assert all_finite(big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.randn(1000)
        t[517] = bad
        assert not all_finite(t)
        assert not all_finite(t.to(torch.bfloat16))
    assert all_finite(torch.empty(0))
