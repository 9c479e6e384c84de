"""The exchange reader opens regular files only, follows no symbolic link, and checks a file's size against the
manifest and the expected tensors before it reads or hashes a byte; the writer never writes through a link."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from mpu_cli.transport import exchange as ex
from mpu_cli.transport.errors import TransportError

TENSORS = {"a": torch.randn(3, 4), "b": torch.randn(5)}


@pytest.fixture(autouse=True)
def no_hang():
    """A reader that blocks on a FIFO fails the test instead of hanging it."""
    def stop(*_):
        raise TimeoutError("the reader blocked")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _returned(tmp_path):
    d = ex.copy_dir(tmp_path / "exchange", 1, 0)
    path = d / ex.RETURNED
    info = ex.write_safetensors(path, TENSORS)
    manifest = {"files": {path.name: info},
                "tensors": ex.tensor_table({n: (tuple(t.shape), t.dtype) for n, t in TENSORS.items()})}
    ex.write_manifest(d / ex.RETURNED_MANIFEST, manifest)
    expected = {n: (tuple(t.shape), ("F32",)) for n, t in TENSORS.items()}
    return path, manifest, expected


def _fifo(path):
    path.unlink()
    os.mkfifo(path)


def _link_to_dev_zero(path):
    path.unlink()
    path.symlink_to("/dev/zero")


def _link_to_a_valid_file(path):
    private = path.parent.parent.parent.parent / "server_private" / "theta.safetensors"
    private.parent.mkdir()
    os.replace(path, private)  # the very file the manifest describes: only the link is wrong
    path.symlink_to(private)


@pytest.mark.parametrize("plant", [_fifo, _link_to_dev_zero, _link_to_a_valid_file])
@pytest.mark.parametrize("which", ["tensors", "manifest"])
def test_only_regular_files_are_read(tmp_path, plant, which):
    path, manifest, expected = _returned(tmp_path)
    target = path if which == "tensors" else path.parent / ex.RETURNED_MANIFEST
    plant(target)
    with pytest.raises(TransportError, match=r"round 1 copy 0: .*(symbolic link|not a regular file)"):
        if which == "tensors":
            ex.read_validated(path, manifest, expected, "round 1 copy 0")
        else:
            ex.read_json(target, "round 1 copy 0")


def test_a_lazily_read_copy_follows_no_link(tmp_path):
    path, _, _ = _returned(tmp_path)
    _link_to_a_valid_file(path)
    with pytest.raises(TransportError, match="symbolic link"):
        ex.LazyStateDict(path)
    with pytest.raises(TransportError, match="symbolic link"):
        ex.sha256_file(path)


def test_a_huge_file_is_refused_by_its_size_before_it_is_hashed(tmp_path, monkeypatch):
    path, manifest, expected = _returned(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(8 << 30)  # sparse: 8 GiB that the disk does not hold
    manifest["files"][path.name]["bytes"] = 8 << 30
    hashed = []
    monkeypatch.setattr(ex.hashlib, "sha256", lambda *a: hashed.append(1) or pytest.fail("hashed"))
    t0 = time.perf_counter()
    with pytest.raises(TransportError, match="more than the expected tensors can take"):
        ex.read_validated(path, manifest, expected, "round 1 copy 0")
    assert not hashed and time.perf_counter() - t0 < 1


def test_a_linked_round_or_copy_folder_is_neither_read_nor_written(tmp_path):
    exchange, elsewhere = tmp_path / "exchange", tmp_path / "elsewhere"
    elsewhere.mkdir()
    exchange.mkdir()
    (exchange / "round_1").symlink_to(elsewhere)
    with pytest.raises(TransportError, match="symbolic link"):
        ex.copy_dir(exchange, 1, 0)
    (exchange / "round_1").unlink()
    (exchange / "round_1").mkdir()
    (exchange / "round_1" / "copy_0").symlink_to(elsewhere)
    with pytest.raises(TransportError, match="symbolic link"):
        ex.write_safetensors(exchange / "round_1" / "copy_0" / ex.PUBLISHED, TENSORS)
    assert list(elsewhere.iterdir()) == []


def test_valid_files_still_read_back_exactly(tmp_path):
    path, manifest, expected = _returned(tmp_path)
    back = ex.read_validated(path, manifest, expected, "round 1 copy 0")
    assert all(torch.equal(back[n], TENSORS[n]) for n in TENSORS)
    assert ex.read_json(path.parent / ex.RETURNED_MANIFEST, "x") == json.loads(
        (path.parent / ex.RETURNED_MANIFEST).read_text())
    lazy = ex.LazyStateDict(path)
    assert all(torch.equal(lazy[n], TENSORS[n]) for n in TENSORS)
