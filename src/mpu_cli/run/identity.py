"""The models a run uses, by content (models/identity.py): recorded when the run starts, compared when it resumes,
so a resumed run never mixes copies of two different models. The record names the models' files and is kept in
the server's private folder (RUN/server_private/models.json), where the target's location belongs."""
from __future__ import annotations

import json
from pathlib import Path

from mpu_cli.config import ConfigError
from mpu_cli.digest import value_digest
from mpu_cli.models.identity import ModelIdentity, model_identity

ROLES = ("base", "target", "retain", "tokenizer")
RECORD = Path("server_private") / "models.json"


def run_models(prepared) -> dict[str, ModelIdentity]:
    """The identity of each model the run uses (role -> identity; roles without a model are left out)."""
    out: dict[str, ModelIdentity] = {}
    for role in ROLES:
        path = getattr(prepared, role)
        if path:
            same = next((m for m in out.values() if m.source == str(Path(str(path)).expanduser())), None)
            out[role] = same or model_identity(path)
    return out


def evaluated_digest(models: dict[str, ModelIdentity], role: str) -> str:
    """16 hex: the content of model `role` and of the tokenizer it is evaluated with."""
    return value_digest({"model": models[role].digest, "tokenizer": models["tokenizer"].digest})


def record(out: Path, models: dict[str, ModelIdentity]) -> None:
    from mpu_cli.files import atomic_write_json, make_private

    path = Path(out) / RECORD
    make_private(path.parent)
    atomic_write_json(path, {role: m.to_json() for role, m in models.items()})


def _recorded(out: Path) -> dict[str, ModelIdentity] | None:
    """The models the run recorded when it started (None: it stopped before it recorded any)."""
    path = Path(out) / RECORD
    if not path.exists():
        return None
    try:
        return {role: ModelIdentity.from_json(v) for role, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"cannot resume {str(out)!r}: {path} is unreadable ({e}); pass overwrite=true to start "
                          "over") from None


FIX = "restore the models the run started with, or pass overwrite=true to start over"


def check_recorded(out: Path) -> None:
    """Before a resumed run writes anything: ConfigError (one line) naming the first file of a recorded model
    whose content changed since the run started (the models are hashed again where the record names them)."""
    was = _recorded(out) or {}
    for role in ROLES:
        if role in was:
            changed = model_identity(was[role].source).changed_file(was[role])
            if changed:
                raise ConfigError(f"cannot resume {str(out)!r}: {changed} ({role} model) changed since the run "
                                  f"started; {FIX}")


def check_unchanged(out: Path, models: dict[str, ModelIdentity]) -> None:
    """Resume: ConfigError (one line) naming the first model file whose content differs from the run's start.
    Nothing to compare when the run stopped before it recorded its models (it had used none of them)."""
    was = _recorded(out)
    if was is None:
        return
    for role in ROLES:
        old, new = was.get(role), models.get(role)
        if old is None and new is None:
            continue
        if old is None or new is None or old.source != new.source:
            raise ConfigError(f"cannot resume {str(out)!r}: its {role} model is now "
                              f"{new.source if new else None!r}, it was {old.source if old else None!r} when the run "
                              f"started; {FIX}")
        changed = new.changed_file(old)
        if changed:
            raise ConfigError(f"cannot resume {str(out)!r}: {changed} ({role} model) changed since the run started; "
                              f"{FIX}")
