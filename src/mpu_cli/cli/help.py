"""The groups and keys part of `mpu-run --help` / `mpu-eval --help` (and the README's option table), generated
from the config schema.

A key's meaning and default are its field's (`option(default, help)` in config.py, unlearn/settings.py); a
group's meaning is that of the schema field it fills (model, data, algorithm) or config.PRESET_GROUPS's, its
options are the files of conf/<group>/, its default the root config's defaults list. Only the groups of that
config's own defaults list are shown: mpu-eval's help lists model and data, not mpu-run's algorithm or presets.
Hydra prints `hydra.help.template` (conf/hydra/help/<app>.yaml), whose `${mpu_help:<config>}` resolves to
`config_help`.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from omegaconf import OmegaConf

from mpu_cli.config import CONF_DIR, PRESET_GROUPS, SCHEMAS
from mpu_cli.options import accepted_range, meaning, nested_settings, settings_fields

WIDTH = 110


@dataclass
class Entry:
    name: str
    default: str | None  # as typed on the command line; None: an interpolation (the meaning says what it follows)
    meaning: str
    accepted: str = ""  # a number's accepted range, e.g. ">= 1"

    def described(self) -> str:
        return f"{self.meaning} [{self.accepted}]" if self.accepted else self.meaning


def register_help() -> None:
    OmegaConf.register_new_resolver("mpu_help", lambda name: config_help(name, CONF_DIR), replace=True)


def group_options(conf_dir: str | Path, group: str) -> list[str]:
    """The options of a config group: the names of its YAML files."""
    return sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))


def _defaults(config_name: str, conf_dir: str | Path) -> tuple[type, list[tuple[str, str | None]]]:
    """The schema a root config builds on and its (group, default option) pairs, in its defaults list's order."""
    schema, groups = None, []
    for item in OmegaConf.load(Path(conf_dir) / f"{config_name}.yaml").defaults:
        if isinstance(item, str):
            schema = SCHEMAS.get(item, schema)
            continue
        for key, option in item.items():
            words = key.split()
            if words[0] != "override" and not words[-1].startswith("hydra/"):
                groups.append((words[-1], option))
    if schema is None:
        raise ValueError(f"conf/{config_name}.yaml names none of the schemas {sorted(SCHEMAS)}")
    return schema, groups


def root_schema(config_name: str, conf_dir: str | Path = CONF_DIR) -> type:
    """The schema dataclass a root config builds on."""
    return _defaults(config_name, conf_dir)[0]


def config_groups(config_name: str, conf_dir: str | Path = CONF_DIR) -> list[str]:
    """The groups a root config's defaults list chooses from (group=option on the command line)."""
    return [g for g, _ in _defaults(config_name, conf_dir)[1]]


def _shown(value) -> str | None:
    """A default as one types it: null, true, 0.01, mpu; None for an interpolation."""
    if isinstance(value, str) and "${" in value:
        return None
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value.value if isinstance(value, Enum) else value)


def _keys(settings, cls, skip: set[str], prefix: str = "") -> list[Entry]:
    out = []
    for f, hint in settings_fields(cls):
        if f.name in skip:
            continue
        value = getattr(settings, f.name)
        sub = nested_settings(hint)
        if sub is not None:
            out += _keys(value, sub, set(), f"{prefix}{f.name}.")
        else:
            bounds = accepted_range(f)
            out.append(Entry(f"{prefix}{f.name}", _shown(value), meaning(f), str(bounds) if bounds else ""))
    return out


def entries(config_name: str, conf_dir: str | Path = CONF_DIR) -> tuple[list[Entry], list[Entry]]:
    """(groups of the root config's defaults list, the schema's other keys), each with its default and meaning.
    A group's keys (model.*, data.*, algorithm.*) are its options' to set, so they are not listed as keys."""
    schema, groups = _defaults(config_name, conf_dir)
    fields = {f.name: f for f, _ in settings_fields(schema)}
    group_entries = [Entry(g, None if option is None else str(option),
                           meaning(fields[g]) if g in fields else PRESET_GROUPS[g]) for g, option in groups]
    return group_entries, _keys(schema(), schema, {g for g, _ in groups})


def _item(label: str, text: str) -> str:
    indent = " " * 28
    head = f"  {label}"
    if len(head) >= len(indent) - 1:  # a long key: its meaning starts on the next line
        return head + "\n" + textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent,
                                            break_on_hyphens=False)
    return textwrap.fill(text, WIDTH, initial_indent=head.ljust(len(indent)), subsequent_indent=indent,
                         break_on_hyphens=False)


def key_label(k: Entry) -> str:
    return k.name if k.default is None else f"{k.name} (required)" if k.default == "???" else f"{k.name}={k.default}"


def config_help(config_name: str, conf_dir: str | Path = CONF_DIR) -> str:
    """The "Groups" and "Keys" sections of the help of the root config <conf_dir>/<config_name>.yaml."""
    groups, keys = entries(config_name, conf_dir)
    lines = ["== Groups: group=option ==", ""]
    for g in groups:
        options = group_options(conf_dir, g.name)
        lines.append(_item(g.name, f"{g.meaning}. Options: {', '.join(options)} (default: {g.default or 'none'})"))
    lines += ["", "== Keys: key=value (default after =; a number's accepted range in [ ]) ==", ""]
    lines += [_item(key_label(k), k.described()) for k in keys]
    return "\n".join(lines + [""]).replace("$", "$$")  # Hydra passes the template through string.Template
