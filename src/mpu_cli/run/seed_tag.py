"""A seeded run's seed where anyone may read: every round secret derives from the seed, so the files the run
leaves readable (run.json, results.csv, .hydra/) carry a tag in its place, and the seed itself is kept only in
the server's private state (RUN/server_private/, owner only).

The tag is a keyed hash of the seed (HMAC-SHA256) under this user's key, kept beside the prepared models
(`prepare.cache_dir`/seed-tag.key, 0600): runs with the same seed and the same cache get the same tag, so
reports still pair an arm's run with the clean run of its seed, and the tag does not tell the seed (a plain
hash of a small number would: trying every seed finds it). No heavy imports: the CLI's precheck uses it.

A reproduce sweep's client follows the seed (its data order differs per seed) through `client_seed`, an integer
keyed the same way under its own label: the client, who reads its seed, learns nothing of the server's.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from mpu_cli.options import ConfigError

KEY_FILE = "seed-tag.key"
PREFIX = "seed-"
# `seed=<value>` as one override of a command line (also `+seed=`, `++seed=`), and inside Hydra's
# override_dirname (`kappa=0.1,seed=0`); `client.seed=` and `prepare.seed=` are not the server's seed.
_OVERRIDE = re.compile(r"(?P<pre>^|,)(?P<key>[+~]*seed)=(?P<value>[^,]*)")
_NO_SEED = ("", "null", "None", "~")


def _key(cache_dir) -> bytes:
    folder = Path(os.path.expanduser(str(cache_dir)))
    path = folder / KEY_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:  # made once, atomically: runs started together agree on the one key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        key = secrets.token_hex(32).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ConfigError(f"prepare.cache_dir={str(folder)!r} is not writable ({e.strerror or e}: it keeps "
                          f"{path.name}, the key of the seed's tag); accepted: a writable folder (set "
                          "prepare.cache_dir=… or MPU_CACHE_DIR)") from None
    return key


def tag(seed, cache_dir) -> str | None:
    """The seed's public tag (None for an unseeded run): `seed-` and 12 hex digits."""
    if seed is None:
        return None
    if is_tag(seed):
        return seed  # already a tag (a recorded configuration)
    return PREFIX + hmac.new(_key(cache_dir), str(seed).encode(), hashlib.sha256).hexdigest()[:12]


def is_tag(value) -> bool:
    """Whether a recorded seed is a tag (records written before tags hold the plain seed)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def client_seed(seed, cache_dir) -> int | None:
    """`${mpu_client_seed:${seed},${prepare.cache_dir}}`: the client's seed that follows the server's seed (None
    for an unseeded run), a 31-bit integer keyed under its own label so that it tells nothing of the seed."""
    if seed is None:
        return None
    digest = hmac.new(_key(cache_dir), b"client-seed:" + str(seed).encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def public_config(config: dict, cache_dir=None) -> dict:
    """A resolved run configuration (a dict) as the run's readable files record it: its seed as a tag (under
    the key of its own prepare.cache_dir, else of `cache_dir`)."""
    if config.get("seed") is None:
        return config
    cache = (config.get("prepare") or {}).get("cache_dir") or cache_dir
    return {**config, "seed": tag(config["seed"], cache)}


def public_override(text: str, cache_dir) -> str:
    """One override of a job (or Hydra's override_dirname of it) with the seed's value as its tag."""
    return _OVERRIDE.sub(lambda m: f"{m.group('pre')}{m.group('key')}={public_value(m.group('value'), cache_dir)}",
                         text)


def public_value(value: str, cache_dir) -> str:
    """A seed as a command line gives it (text), as its tag; `null` stays."""
    value = str(value).strip()
    return value if value in _NO_SEED else tag(value, cache_dir)
