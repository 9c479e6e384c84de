"""The exchange folder: the only thing the server and the client share.

Layout (format "mpu-exchange/1"); every file is written atomically, and in each stage the marker is written last:

    exchange/
      public/                        the public model: config.json (architecture) + tokenizer files. No weights.
      round_{r}/
        copy_{k}/
          published.safetensors      θ_pub^(k) of round r, in the model's training dtype       (server)
          manifest.json              its manifest; written after the file: "copy k is published"  (server)
          returned.safetensors       the client's UPDATED COPY θ̃^(k) (full weights, not the difference),
                                     float32 or the published dtype per tensor                  (client)
          adapter_model.safetensors  instead, from a LoRA client (client.lora): its adapter's factors and
          adapter_config.json        peft's config of it, the two files peft itself writes       (client)
          returned_manifest.json     its manifest; written after the file: "copy k is returned"   (client)
        round.json                   written after every copy's manifest: "round r is published"  (server)

A manifest holds: format, kind ("published" | "returned"), content (returned: "updated_copy" | "lora_adapter"), run_id (a random public token of this exchange,
no secret derives from it), round, copy, n_copies, per file its SHA-256 and size, per tensor its dtype and
shape; a returned manifest also the SHA-256 of the published file it started from (binds an update to its
copy). Manifests never hold seeds, α, σ, transforms or θ — `check_manifest_is_public` enforces the key set.

Everything read is validated (`read_validated`): manifest fields, file size (against the manifest and the
expected tensors, before a byte is read), a well-formed safetensors header, key set, shapes, dtypes, SHA-256 and
finite values. Any failure raises `TransportError` naming the round, the copy and what is wrong; nothing is
returned from a file that fails. Only regular files are opened and no symbolic link is followed (`open_regular`,
and no round_r / copy_k folder may be a link): a FIFO or a device would block the reader or never end, and a link
could point into the server's private state.

This module is shared by both parties: it imports neither the server (mpu/) nor the client (unlearn/, data/).
"""
from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import struct
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import torch

from mpu_cli.files import atomic_write_json, file_mode
from mpu_cli.finite import all_finite
from mpu_cli.models import lora
from mpu_cli.transport.errors import TransportError

FORMAT = "mpu-exchange/1"
PUBLISHED, PUBLISHED_MANIFEST = "published.safetensors", "manifest.json"
RETURNED, RETURNED_MANIFEST = "returned.safetensors", "returned_manifest.json"
ROUND_MARKER = "round.json"
PUBLIC_DIR = "public"
RETURNED_CONTENT = "updated_copy"  # returned.safetensors holds θ̃^(k), the whole updated copy
ADAPTER, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"  # peft's file names
ADAPTER_CONTENT = "lora_adapter"  # the returned files are a LoRA adapter: ADAPTER + ADAPTER_CONFIG

# safetensors dtype codes <-> torch
_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH = {v: k for k, v in _ST.items()}
_FLOAT_CODES = ("F64", "F32", "F16", "BF16")
_CHUNK = 1 << 22
_JSON_LIMIT = 64 << 20  # a manifest lists a dtype and a shape per tensor: far below this

# Keys a manifest may contain (top level and per file / per tensor); anything else is rejected on read and
# can never be written, so no secret can ride along by accident.
_MANIFEST_KEYS = {"format", "kind", "run_id", "round", "copy", "n_copies", "files", "tensors", "content",
                  "published_sha256"}
_FILE_KEYS = {"sha256", "bytes"}
_TENSOR_KEYS = {"dtype", "shape"}
_ROUND_KEYS = {"format", "kind", "run_id", "round", "n_copies", "copies"}


def dtype_code(dtype: torch.dtype) -> str:
    if dtype not in _ST:
        raise TransportError(f"dtype {dtype} cannot be exchanged; supported: {sorted(map(str, _ST))}")
    return _ST[dtype]


def torch_dtype(code: str) -> torch.dtype:
    if code not in _TORCH:
        raise TransportError(f"dtype code {code!r} is not one of {sorted(_TORCH)}")
    return _TORCH[code]


# ---- paths ----------------------------------------------------------------------------------------------------


def _not_a_link(path: Path) -> Path:
    if path.is_symlink():
        raise TransportError(f"{path} is a symbolic link; the exchange folder holds plain folders and files only")
    return path


def round_dir(exchange: Path, r: int) -> Path:
    return _not_a_link(Path(exchange) / f"round_{r}")


def copy_dir(exchange: Path, r: int, k: int) -> Path:
    return _not_a_link(round_dir(exchange, r) / f"copy_{k}")


def open_regular(path: Path, what: str):
    """`path` opened for binary reading if it is a regular file and not a symbolic link, else TransportError.
    O_NONBLOCK: opening a FIFO returns at once (and is then refused) instead of waiting for a writer."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TransportError(f"{what}: {path.name} is missing") from None
    except OSError as e:
        why = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot be opened ({e.strerror})"
        raise TransportError(f"{what}: {path.name} {why}; only regular files are read") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TransportError(f"{what}: {path.name} is not a regular file; only regular files are read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def write_public(exchange: Path, save) -> None:
    """The public model's files into exchange/public/ (`save(folder)` writes them), following no link: they are
    written into a fresh folder of the exchange, then moved into public/ by name, relative to public/ opened as a
    folder that is not a link — a link planted in its place, or in place of one of its files, would have the
    server write where it points. TransportError when public/ is a link or not a folder."""
    import shutil

    exchange = Path(exchange)
    exchange.mkdir(parents=True, exist_ok=True)
    public = exchange / PUBLIC_DIR
    tmp = Path(tempfile.mkdtemp(dir=exchange, prefix=f".{PUBLIC_DIR}."))
    try:
        save(tmp)
        with contextlib.suppress(FileExistsError):
            os.mkdir(public)
        try:
            dst = os.open(public, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            what = "a symbolic link" if public.is_symlink() else "not a folder"
            raise TransportError(f"{public} is {what}; the exchange folder holds plain folders and files only"
                                 ) from None
        src = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in os.listdir(src):
                os.replace(name, name, src_dir_fd=src, dst_dir_fd=dst)  # a link in public/ is replaced, not followed
        finally:
            os.close(src)
            os.close(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_published(exchange: Path, r: int) -> bool:
    """Round r is completely published: its marker, written after every copy, is there."""
    return (round_dir(exchange, r) / ROUND_MARKER).exists()


def is_returned(exchange: Path, r: int, k: int) -> bool:
    """Copy k of round r is returned: its manifest, written after the file, is there (the reader validates it)."""
    return (copy_dir(exchange, r, k) / RETURNED_MANIFEST).exists()


def where(r: int, k: int | None) -> str:
    return f"round {r}" + ("" if k is None else f" copy {k}")


# ---- writing --------------------------------------------------------------------------------------------------


def _header(spec: dict[str, tuple[tuple[int, ...], torch.dtype]], metadata: dict | None) -> bytes:
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, (shape, dtype) in spec.items():
        nbytes = _numel(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": dtype_code(dtype), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


class _BackgroundWrites:
    """One thread that writes byte blocks to their files (when given one) and hashes them, in the order they were
    handed in, so the caller builds its next tensor while the last one goes to disk or through the hash. At most
    `budget` bytes wait at once; a larger block waits until nothing else does and then waits alone, so a large
    tensor stays alive beside the one the caller builds next, never beside a further one. An error in the thread
    is raised in the caller at its next call."""

    def __init__(self, budget: int):
        self._budget = budget
        self._pending = 0  # bytes handed in, not yet written
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="safetensors-writer", daemon=True)
        self._thread.start()

    def submit(self, f, digest, data: memoryview, keep) -> None:
        """Write `data` to `f` (None: no file) and feed it to `digest`; `keep` (the tensor `data` views) lives until
        then."""
        n = data.nbytes
        with self._cond:
            self._cond.wait_for(lambda: self._error is not None or not self._pending
                                or (n <= self._budget and self._pending + n <= self._budget))
            self._raise()
            self._pending += n
            self._jobs.append((f, digest, data, keep))
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until every block handed in is written."""
        with self._cond:
            self._cond.wait_for(lambda: self._error is not None or not self._pending)
            self._raise()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._stop)
                if not self._jobs:
                    return
                f, digest, data, keep = self._jobs.popleft()
            try:
                if self._error is None:
                    if f is not None:
                        f.write(data)
                    digest.update(data)
            except BaseException as e:  # noqa: BLE001 (any failure is handed to the caller at its next call)
                self._error = e
            with self._cond:
                self._pending -= data.nbytes
                del f, digest, data, keep
                self._cond.notify_all()


class StreamingSafetensorsWriter:
    """Writes n safetensors files side by side, tensor by tensor, in the order of `spec` (the header is known
    up front from shapes and dtypes). Computes each file's SHA-256 while writing; writing and hashing run in a
    background thread beside the caller, which may hold on to at most 1/16 of the largest file's bytes in
    tensors not yet written, or to one larger tensor alone. Files appear under their final names only on
    `commit()` (temp file + fsync + rename)."""

    WAITING_SHARE = 16  # bytes waiting to be written: at most 1/16 of the largest file

    def __init__(self, paths: list[Path], spec: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        self._paths = [Path(p) for p in paths]
        self._spec = dict(spec)
        self._names = list(spec)
        self._next = 0
        header = _header(self._spec, {"format": FORMAT})
        self._files, self._tmps, self._hashes, self._sizes = [], [], [], []
        self._writes: _BackgroundWrites | None = None
        try:
            for p in self._paths:
                p.parent.mkdir(parents=True, exist_ok=True)
                _not_a_link(p.parent)  # mkstemp would write wherever a planted link points
                fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
                os.fchmod(fd, file_mode(p))  # the umask, or 0600 in the server's private folder
                f = os.fdopen(fd, "wb")
                self._files.append(f)
                self._tmps.append(tmp)
                f.write(header)
                self._hashes.append(hashlib.sha256(header))
                self._sizes.append(len(header))
            data_bytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in self._spec.values())
            self._writes = _BackgroundWrites(data_bytes // self.WAITING_SHARE)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, tensors) -> None:
        """The next tensor (in spec order) of every file: the i-th of `tensors` goes to paths[i]. An iterator is
        consumed one tensor at a time, each handed to the writing thread before the next is asked for; the
        tensors must not be changed afterwards."""
        if self._next >= len(self._names) or self._names[self._next] != name:
            raise ValueError(f"expected tensor {self._names[self._next:self._next + 1]}, got {name!r}")
        shape, dtype = self._spec[name]
        n = 0
        for i, t in enumerate(tensors):
            if i >= len(self._files):
                raise ValueError(f"{name}: more tensors than the {len(self._files)} files")
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise ValueError(f"{name}: got {tuple(t.shape)} {t.dtype}, spec says {tuple(shape)} {dtype}")
            t = t.detach().cpu().contiguous()
            data = _tensor_bytes(t)
            self._writes.submit(self._files[i], self._hashes[i], data, t)
            self._sizes[i] += data.nbytes
            n = i + 1
            del t, data  # an iterator's next tensor is built without this one
        if n != len(self._files):
            raise ValueError(f"{name}: {n} tensors for {len(self._files)} files")
        self._next += 1

    def commit(self) -> list[dict]:
        """Close and rename every file; returns [{'sha256', 'bytes'}] per file."""
        if self._next != len(self._names):
            raise ValueError(f"only {self._next} of {len(self._names)} tensors were written")
        self._writes.drain()
        self._writes.close()
        for f in self._files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for tmp, p in zip(self._tmps, self._paths):
            os.replace(tmp, p)
        self._tmps = []
        return [{"sha256": h.hexdigest(), "bytes": n} for h, n in zip(self._hashes, self._sizes)]

    def abort(self) -> None:
        if self._writes is not None:
            self._writes.close()
        for f in self._files:
            if not f.closed:
                f.close()
        for tmp in self._tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._tmps = []


def write_safetensors(path: Path, tensors) -> dict:
    """One file, atomically; returns {'sha256', 'bytes'}. tensors: a state dict, or a lazily read mapping that
    tells each tensor's shape and dtype (`shape(name)`, `dtype(name)`) and is read one tensor at a time."""
    if hasattr(tensors, "dtype"):
        spec = {n: (tuple(tensors.shape(n)), tensors.dtype(n)) for n in tensors}
    else:
        spec = {n: (tuple(t.shape), t.dtype) for n, t in tensors.items()}
    w = StreamingSafetensorsWriter([path], spec)
    try:
        for n in spec:
            w.write(n, [tensors[n]])
        return w.commit()[0]
    except BaseException:
        w.abort()
        raise


def tensor_table(spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict:
    return {n: {"dtype": dtype_code(d), "shape": list(s)} for n, (s, d) in spec.items()}


def check_manifest_is_public(manifest: dict) -> None:
    """Only the documented keys: a manifest cannot carry a secret by accident."""
    extra = set(manifest) - _MANIFEST_KEYS - _ROUND_KEYS
    for info in manifest.get("files", {}).values():
        extra |= set(info) - _FILE_KEYS
    for info in manifest.get("tensors", {}).values():
        extra |= set(info) - _TENSOR_KEYS
    if extra:
        raise TransportError(f"manifest has undocumented keys {sorted(extra)}")


def write_manifest(path: Path, manifest: dict) -> None:
    check_manifest_is_public(manifest)
    atomic_write_json(path, manifest)


def published_manifest(run_id: str, r: int, k: int, n_copies: int, file_info: dict, spec) -> dict:
    return {"format": FORMAT, "kind": "published", "run_id": run_id, "round": r, "copy": k, "n_copies": n_copies,
            "files": {PUBLISHED: file_info}, "tensors": tensor_table(spec)}


def write_returned(exchange: Path, pub: dict, tensors: dict[str, torch.Tensor],
                   adapter_config: dict | None = None) -> dict:
    """The client's answer for one copy: returned.safetensors (the updated copy) or, with `adapter_config`, a LoRA
    adapter in peft's two files (`tensors` its factors); then the manifest (the completion marker) covering every
    file. `pub` is the validated published manifest of that copy."""
    r, k = pub["round"], pub["copy"]
    d = copy_dir(exchange, r, k)
    stale = d / RETURNED_MANIFEST
    if stale.exists():
        stale.unlink()  # a redo: the old marker goes first, so a crash never leaves a marker over a new file
    if adapter_config is None:
        content, files = RETURNED_CONTENT, {RETURNED: write_safetensors(d / RETURNED, tensors)}
    else:
        atomic_write_json(d / ADAPTER_CONFIG, adapter_config)
        digest, size = sha256_file(d / ADAPTER_CONFIG)
        content = ADAPTER_CONTENT
        files = {ADAPTER: write_safetensors(d / ADAPTER, tensors), ADAPTER_CONFIG: {"sha256": digest, "bytes": size}}
    manifest = {"format": FORMAT, "kind": "returned", "run_id": pub["run_id"], "round": r, "copy": k,
                "n_copies": pub["n_copies"], "content": content,
                "published_sha256": pub["files"][PUBLISHED]["sha256"], "files": files,
                "tensors": tensor_table({n: (tuple(t.shape), t.dtype) for n, t in tensors.items()})}
    write_manifest(d / RETURNED_MANIFEST, manifest)
    return manifest


def read_validated_json(path: Path, manifest: dict, what: str) -> dict:
    """A JSON file the manifest lists (a LoRA adapter's config), checked like a tensor file: a regular file, its
    size and SHA-256 against the manifest, then parsed."""
    path = Path(path)
    info = _listed(manifest, path, what)
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size != info["bytes"] or size > _JSON_LIMIT:
            raise TransportError(f"{what}: {path.name} is {size} bytes, its manifest says {info['bytes']} "
                                 f"(truncated or altered)")
        _check_digest(f, info, path, what)
        return _json_object(f, path, what)


def _listed(manifest: dict, path: Path, what: str) -> dict:
    """The manifest's record of `path` ({'sha256', 'bytes'}); TransportError when it has none."""
    info = manifest.get("files", {}).get(path.name)
    if not isinstance(info, dict) or not {"sha256", "bytes"} <= set(info):
        raise TransportError(f"{what}: the manifest does not describe {path.name}")
    return info


def _check_digest(f, info: dict, path: Path, what: str) -> None:
    """The open file's SHA-256 against the manifest's record of it."""
    digest, _ = _sha256(f)
    if digest != info["sha256"]:
        raise TransportError(f"{what}: {path.name} SHA-256 {digest[:12]}… does not match its manifest "
                             f"({str(info['sha256'])[:12]}…): the file was altered")


# ---- reading and validation -----------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> dict:
    path = Path(path)
    with open_regular(path, what) as f:
        if os.fstat(f.fileno()).st_size > _JSON_LIMIT:
            raise TransportError(f"{what}: {path.name} is larger than {_JSON_LIMIT >> 20} MiB; not a manifest")
        return _json_object(f, path, what)


def _json_object(f, path: Path, what: str) -> dict:
    """The JSON object in the open file `f`, read from its start."""
    f.seek(0)
    try:
        obj = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TransportError(f"{what}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TransportError(f"{what}: {path.name} is not a JSON object")
    return obj


def read_round(exchange: Path, r: int) -> dict:
    """The round marker: round r is completely published."""
    m = read_json(round_dir(exchange, r) / ROUND_MARKER, where(r, None))
    if m.get("format") != FORMAT or m.get("round") != r or not isinstance(m.get("n_copies"), int):
        raise TransportError(f"{where(r, None)}: {ROUND_MARKER} is not a round marker of format {FORMAT}")
    return m


def latest_round(exchange: Path) -> int:
    found = [p.name.split("_", 1)[1] for p in Path(exchange).glob("round_*")]
    rounds = [int(r) for r in found if r.isdigit() and is_published(exchange, int(r))]
    if not rounds:
        raise TransportError(f"{exchange}: no published round (no round_*/{ROUND_MARKER})")
    return max(rounds)


class HashedReader:
    """A safetensors file read front to back, one tensor at a time in the file's own order, every byte read also
    fed to a SHA-256: `verified()` reads what is left and says whether the whole file hashes to `sha256`. The
    bytes handed out are the bytes hashed, so a file changed before or while it is read is caught; they are hashed
    on a background thread while the caller works, so the caller must not change a tensor it was handed. Any
    problem reading it (missing, not a regular file, a tensor not next in the file) makes `read` return None."""

    WAITING_SHARE = StreamingSafetensorsWriter.WAITING_SHARE  # bytes read, not yet hashed: at most this share

    def __init__(self, path: Path, sha256: str):
        self._sha256 = sha256
        self._hash = hashlib.sha256()
        self._f = None
        self._hashing: _BackgroundWrites | None = None
        self._header: dict = {}
        self._pos = 0  # offset in the data section of the next unread byte
        self._start = 0  # where the data section begins in the file
        try:
            self._f = open_regular(path, str(path))
            self._hashing = _BackgroundWrites(os.fstat(self._f.fileno()).st_size // self.WAITING_SHARE)
            head = self._take(8)
            raw = self._take(struct.unpack("<Q", head)[0]) if len(head) == 8 else b""
            self._header = json.loads(raw) if raw else {}
            self._start = 8 + len(raw)
        except (TransportError, OSError, ValueError):
            self.close()

    def _take(self, n: int) -> bytes:
        data = self._f.read(n)
        self._hash.update(data)
        return data

    def _hashed(self, data, keep) -> None:
        """Feed `data` (a view of `keep`) to the file's hash, behind the caller and in the order read."""
        self._hashing.submit(None, self._hash, memoryview(data), keep)

    def _next(self, name: str) -> dict | None:
        """The header entry of `name` if it is the next tensor of the file, else None."""
        info = self._header.get(name) if self._f is not None else None
        if not isinstance(info, dict) or info.get("data_offsets", [None])[0] != self._pos:
            return None
        return info

    def read(self, name: str) -> torch.Tensor | None:
        """The next tensor of the file if it is `name` (as stored), else None."""
        info = self._next(name)
        if info is None:
            return None
        try:
            t = _read_tensor(self._f, self._start, info, name)
        except (KeyError, TypeError, ValueError, RuntimeError, OSError, TransportError):
            return None
        self._hashed(_tensor_bytes(t), t)
        self._pos = info["data_offsets"][1]
        return t

    def skip(self, name: str) -> bool:
        """Hash the next tensor without keeping it (memory of one read chunk); False when it is not `name`."""
        info = self._next(name)
        if info is None:
            return False
        try:
            a, b = info["data_offsets"]
            left = b - a
            while left > 0:
                chunk = self._f.read(min(left, _CHUNK))
                if not chunk:
                    return False
                self._hashed(chunk, chunk)
                left -= len(chunk)
        except (KeyError, TypeError, ValueError, OSError):
            return False
        self._pos = b
        return True

    def verified(self) -> bool:
        """The rest of the file read; True when the whole file hashes to the expected SHA-256. Closes the file."""
        if self._f is None:
            return False
        try:
            while chunk := self._f.read(_CHUNK):
                self._hashed(chunk, chunk)
            self._hashing.drain()
        except OSError:
            return False
        finally:
            self.close()
        return self._hash.hexdigest() == self._sha256

    def close(self) -> None:
        if self._hashing is not None:
            self._hashing.close()
            self._hashing = None
        if self._f is not None:
            self._f.close()
            self._f = None


def sha256_file(path: Path) -> tuple[str, int]:
    with open_regular(path, str(path)) as f:
        return _sha256(f)


def _sha256(f) -> tuple[str, int]:
    f.seek(0)
    h, n = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def _max_bytes(expected: dict[str, tuple[tuple[int, ...], tuple[str, ...]]]) -> int:
    """The largest safetensors file that can hold `expected`: its tensors in their widest accepted dtype and a
    header of at most 1 KiB per tensor (a name, a dtype, a shape and two offsets)."""
    data = sum(_numel(shape) * max(torch.empty((), dtype=torch_dtype(c)).element_size() for c in codes)
               for shape, codes in expected.values())
    return 8 + 1024 * (len(expected) + 1) + data


def _header_of(path: Path, size: int, what: str, f) -> dict:
    """The checked header of the open safetensors file `f` (of `size` bytes), without "__metadata__"."""
    f.seek(0)
    raw = f.read(8)
    if len(raw) < 8:
        raise TransportError(f"{what}: {path.name} is truncated (no safetensors header)")
    (n,) = struct.unpack("<Q", raw)
    if n > size - 8:
        raise TransportError(f"{what}: {path.name} is truncated (header of {n} bytes, file of {size})")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TransportError(f"{what}: {path.name} has a malformed safetensors header") from None
    if not isinstance(header, dict):
        raise TransportError(f"{what}: {path.name} has a malformed safetensors header")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        try:
            a, b = info["data_offsets"]
            nbytes = _numel(info["shape"]) * torch.empty((), dtype=torch_dtype(info["dtype"])).element_size()
        except (KeyError, TypeError, ValueError, TransportError):
            raise TransportError(f"{what}: {path.name}: malformed header entry for {name!r}") from None
        if b - a != nbytes or a < 0:
            raise TransportError(f"{what}: {path.name}: {name!r} occupies {b - a} bytes, its shape needs {nbytes}")
        end = max(end, b)
    if 8 + n + end != size:
        raise TransportError(f"{what}: {path.name} is truncated or has trailing bytes ({size} bytes, its header "
                             f"describes {8 + n + end})")
    return header


def read_validated(path: Path, manifest: dict, expected: dict[str, tuple[tuple[int, ...], tuple[str, ...]]],
                   what: str, load: bool = True) -> dict[str, torch.Tensor] | None:
    """Check one exchanged safetensors file against its manifest and against what the reader expects.

    expected: name -> (shape, accepted dtype codes). Checks, in order: the manifest lists this file; a regular
    file (no link, FIFO or device); its size against the manifest and against the largest file `expected` fits
    (nothing is read before); a well-formed header that agrees with the manifest's tensor table; key set; shapes;
    dtypes; its SHA-256; finite values (float tensors). Every read goes through the one descriptor opened first.
    Returns the tensors (load=True) or None (load=False: checked, then dropped tensor by tensor, memory of one
    tensor)."""
    path = Path(path)
    check_manifest_is_public(manifest)
    info = _listed(manifest, path, what)
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size != info["bytes"]:
            raise TransportError(f"{what}: {path.name} is {size} bytes, its manifest says {info['bytes']} "
                                 f"(truncated or altered)")
        if size > _max_bytes(expected):
            raise TransportError(f"{what}: {path.name} is {size} bytes, more than the expected tensors can "
                                 f"take ({_max_bytes(expected)})")
        header = _header_of(path, size, what, f)
        _check_header(path, header, manifest, expected, what)
        _check_digest(f, info, path, what)
        start = _data_start(f)
        out: dict[str, torch.Tensor] = {}
        for name in expected:
            t = _read_tensor(f, start, header[name], f"{what}: {path.name}: {name!r}")
            if is_float_code(header[name]["dtype"]) and not all_finite(t):
                bad = int((~torch.isfinite(t)).sum())
                raise TransportError(f"{what}: {path.name}: {name!r} has {bad} non-finite values")
            if load:
                out[name] = t
    return out if load else None


def _check_header(path: Path, header: dict, manifest: dict, expected: dict, what: str) -> None:
    table = manifest.get("tensors", {})
    for name, h in header.items():
        t = table.get(name)
        if t is None or t.get("dtype") != h["dtype"] or list(t.get("shape", [])) != list(h["shape"]):
            raise TransportError(f"{what}: {path.name}: tensor {name!r} disagrees with the manifest")
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        detail = (f"{len(missing)} missing, e.g. {missing[0]!r}" if missing else "") + \
                 (("; " if missing else "") + f"{len(extra)} unexpected, e.g. {extra[0]!r}" if extra else "")
        raise TransportError(f"{what}: {path.name} has the wrong tensor names ({detail})")
    for name, (shape, codes) in expected.items():
        h = header[name]
        if list(h["shape"]) != list(shape):
            raise TransportError(f"{what}: {path.name}: {name!r} has shape {tuple(h['shape'])}, "
                                 f"expected {tuple(shape)}")
        if h["dtype"] not in codes:
            raise TransportError(f"{what}: {path.name}: {name!r} has dtype {h['dtype']}, "
                                 f"accepted: {', '.join(codes)}")


def _data_start(f) -> int:
    f.seek(0)
    return 8 + struct.unpack("<Q", f.read(8))[0]


def _read_tensor(f, data_start: int, info: dict, what: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One tensor by plain reads (no memory map) from an open safetensors file whose header was checked.
    dtype: the tensor converted to it as it is read (the same values as `.to(dtype)` after the read), a slice at a
    time through one small buffer, so the stored dtype never takes a tensor-sized temporary."""
    a, b = info["data_offsets"]
    stored = torch_dtype(info["dtype"])
    if dtype is not None and dtype != stored and b - a > _CONVERT_SLICE:
        return _read_converted(f, data_start, info, what, stored, dtype)
    if b == a:
        t = torch.empty(info["shape"], dtype=stored)
    else:
        buf = torch.empty(b - a, dtype=torch.uint8)  # not zero-filled first: the read fills every byte
        f.seek(data_start + a)
        if f.readinto(memoryview(buf.numpy())) != b - a:
            raise TransportError(f"{what} is truncated")
        t = buf.view(stored).reshape(info["shape"])
    return t if dtype is None else t.to(dtype)


_CONVERT_SLICE = 1 << 20  # bytes read at once when converting as read: the slice stays in the core's cache


def _read_converted(f, data_start: int, info: dict, what: str, stored: torch.dtype, dtype: torch.dtype):
    a, b = info["data_offsets"]
    out = torch.empty(info["shape"], dtype=dtype)
    flat = out.reshape(-1)
    step = _CONVERT_SLICE - _CONVERT_SLICE % stored.itemsize
    buf = torch.empty(step, dtype=torch.uint8)
    view = memoryview(buf.numpy())
    f.seek(data_start + a)
    done = 0
    for start in range(0, b - a, step):
        n = min(step, b - a - start)
        if f.readinto(view[:n]) != n:
            raise TransportError(f"{what} is truncated")
        part = buf[:n].view(stored)
        flat[done : done + part.numel()].copy_(part)
        done += part.numel()
    return out


def is_float_code(code: str) -> bool:
    return code in _FLOAT_CODES


def check_manifest_identity(m: dict, kind: str, run_id: str | None, r: int, k: int, what: str) -> None:
    if m.get("format") != FORMAT:
        raise TransportError(f"{what}: manifest format {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("kind") != kind:
        raise TransportError(f"{what}: manifest kind {m.get('kind')!r}, expected {kind!r}")
    if run_id is not None and m.get("run_id") != run_id:
        raise TransportError(f"{what}: manifest belongs to exchange {m.get('run_id')!r}, not {run_id!r} "
                             f"(a file from another run)")
    if m.get("round") != r or m.get("copy") != k:
        raise TransportError(f"{what}: manifest is for round {m.get('round')} copy {m.get('copy')} "
                             f"(a file from another round or copy)")


def returned_dtypes(published_code: str) -> tuple[str, ...]:
    """The dtype codes a returned tensor may have: float32, or the dtype its copy was published in."""
    return ("F32",) if published_code == "F32" else ("F32", published_code)


def check_returned_origin(m: dict, run_id: str, r: int, k: int, published_sha256: str) -> None:
    """A returned manifest names this run, round and copy, and was computed from the published file of SHA-256
    `published_sha256` (the server's record); TransportError otherwise. Whatever the returned content is."""
    what = where(r, k)
    check_manifest_identity(m, "returned", run_id, r, k, what)
    if m.get("published_sha256") != published_sha256:
        raise TransportError(f"{what}: the update was computed from another published file "
                             f"(published_sha256 does not match the server's record)")


def check_returned(exchange: Path, r: int, k: int, run_id: str, published_sha256: str,
                   published: dict[str, tuple[tuple[int, ...], str]]) -> tuple[Path, float | None]:
    """Copy k's returned files of round r, checked completely whatever their content (the manifest, that it was
    computed from the published file of SHA-256 `published_sha256`, then every file it lists): (the updated copy's
    file, None), or (the adapter's factor file, its lora_alpha / r) for a LoRA adapter. `published`: name ->
    (shape, dtype code) of the copy as published. TransportError naming what is wrong."""
    what = where(r, k)
    d = copy_dir(exchange, r, k)
    m = read_json(d / RETURNED_MANIFEST, what + " (not returned yet?)")
    check_returned_origin(m, run_id, r, k, published_sha256)
    content = m.get("content")
    if content == ADAPTER_CONTENT:
        return _check_adapter(d, m, {n: shape for n, (shape, _) in published.items()}, what)
    if content != RETURNED_CONTENT:
        raise TransportError(f"{what}: content {content!r}; accepted: {RETURNED_CONTENT!r}, {ADAPTER_CONTENT!r}")
    expected = {n: (shape, returned_dtypes(code)) for n, (shape, code) in published.items()}
    read_validated(d / RETURNED, m, expected, what, load=False)
    return d / RETURNED, None


def _check_adapter(d: Path, m: dict, shapes: dict[str, tuple[int, ...]], what: str) -> tuple[Path, float]:
    """A returned LoRA adapter: its checked adapter_config.json gives the scale and the rank, the manifest's tensor
    names the weights, `shapes` the model's; the factor file must hold exactly those factors."""
    config = read_validated_json(d / ADAPTER_CONFIG, m, what)
    tensors = m.get("tensors")
    if not isinstance(tensors, dict):
        raise TransportError(f"{what}: the manifest has no tensor table")
    try:
        s, factors = lora.scaling(config), lora.expected_factors(tensors, shapes, config["r"])
    except ValueError as e:
        raise TransportError(f"{what}: {e}") from None
    read_validated(d / ADAPTER, m, factors, what, load=False)
    return d / ADAPTER, s


def returned_refusal(exchange: Path, r: int, k: int) -> str | None:
    """Why the server would refuse copy k's returned files (an updated copy or a LoRA adapter), judged from the
    exchange folder alone (its published manifest as the record); None when the copy is returned and sound.
    mpu-run asks it before a resumed round, so that a refused copy is redone instead of refused again."""
    try:
        pub = read_json(copy_dir(exchange, r, k) / PUBLISHED_MANIFEST, where(r, k))
        published = {n: (tuple(t["shape"]), t["dtype"]) for n, t in pub["tensors"].items()}
        check_returned(exchange, r, k, pub["run_id"], pub["files"][PUBLISHED]["sha256"], published)
    except (TransportError, KeyError, TypeError, AttributeError) as e:
        return str(e)
    return None


class LazyStateDict(Mapping):
    """A read-only mapping over a validated safetensors file: each tensor is read when asked for, so a
    consumer that streams by name (the server's aggregate) never holds the whole file. Tensors are read with
    plain file reads, not through a memory map: mapped pages of the m files would count in the process's
    resident memory as the aggregate touches them, growing it by m copies."""

    def __init__(self, path: Path, names=None):
        self._path = Path(path)
        with open_regular(self._path, str(self._path)) as f:
            self._header = _header_of(self._path, os.fstat(f.fileno()).st_size, str(self._path), f)
            self._data_start = _data_start(f)
        self._names = list(self._header if names is None else names)

    def __contains__(self, name) -> bool:
        return name in self._names

    def __getitem__(self, name) -> torch.Tensor:
        return self.read(name)

    def read(self, name, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor; dtype: converted to it as it is read (the values of `.to(dtype)`)."""
        if name not in self._names:
            raise KeyError(name)
        with open_regular(self._path, str(self._path)) as f:
            return _read_tensor(f, self._data_start, self._header[name], f"{self._path}: {name!r}", dtype)

    def rows(self, name, start: int, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows start:stop (the first axis) of a tensor, read alone (dtype: as in `read`)."""
        if name not in self._names:
            raise KeyError(name)
        info = self._header[name]
        shape, (a, b) = info["shape"], info["data_offsets"]
        row_bytes = (b - a) // shape[0] if shape and shape[0] else 0
        part = {"dtype": info["dtype"], "shape": [stop - start, *shape[1:]],
                "data_offsets": [a + start * row_bytes, a + stop * row_bytes]}
        with open_regular(self._path, str(self._path)) as f:
            return _read_tensor(f, self._data_start, part, f"{self._path}: {name!r}", dtype)

    def shape(self, name) -> tuple[int, ...]:
        """A tensor's shape from the header, without reading it."""
        if name not in self._names:
            raise KeyError(name)
        return tuple(self._header[name]["shape"])

    def dtype(self, name) -> torch.dtype:
        """A tensor's dtype from the header, without reading it."""
        if name not in self._names:
            raise KeyError(name)
        return torch_dtype(self._header[name]["dtype"])

    def keys(self):
        return list(self._names)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
