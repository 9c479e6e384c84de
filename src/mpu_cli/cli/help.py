"""The groups and keys part of `mpu-run --help` / `mpu-eval --help`, read from the root config's own comments.

A key's meaning is written once, as the comment next to its default in conf/<config>.yaml (a comment-only line
indented under it continues it), or, for a key whose default lives in the schema only, as its field's "help"
metadata (`schema_entries`); a group's, as the comment on its line of the defaults list. Hydra prints
`hydra.help.template` (conf/hydra/help/<app>.yaml), whose `${mpu_help:<config>}` resolves to `config_help`.
Only the groups of that config's own defaults list are shown: mpu-eval's help lists model and data, not
mpu-run's algorithm or presets.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path

WIDTH = 110
_DEFAULT = re.compile(r"^\s*-\s+(optional\s+)?([\w/]+):\s*(\S+)\s*(?:#\s?(.*))?$")
_KEY = re.compile(r"^(\s*)([A-Za-z_]\w*):(?:\s+(.*?))?\s*$")


@dataclass
class Entry:
    name: str
    default: str | None  # the value as written; None for a parent key
    meaning: str


def _split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of a YAML line: the comment starts at the first ' #' outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def parse(text: str) -> tuple[list[Entry], list[Entry]]:
    """(groups of the defaults list, leaf keys outside `defaults` and `hydra`), each with its comment."""
    groups: list[Entry] = []
    keys: list[Entry] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open parents
    last: Entry | None = None  # the entry a comment-only continuation line belongs to
    last_indent = -1
    block = None  # the top-level key being read
    for line in text.splitlines():
        code, comment = _split_comment(line)
        if not code.strip():
            indent = len(line) - len(line.lstrip())
            if comment and last is not None and indent > last_indent:
                last.meaning = f"{last.meaning} {comment}".strip()
            else:
                last = None
            continue
        indent = len(code) - len(code.lstrip())
        if block == "defaults" and indent > 0:
            m = _DEFAULT.match(line)
            last = None
            if m and not m.group(2).startswith(("hydra/", "override")):
                last = Entry(m.group(2), m.group(3), m.group(4) or "")
                last_indent = indent
                groups.append(last)
            continue
        m = _KEY.match(code)
        if not m:
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name, value = m.group(2), m.group(3)
        if indent == 0:
            block = name
        if block in ("defaults", "hydra"):
            last = None
            continue
        dotted = ".".join([k for _, k in stack] + [name])
        if value is None:  # a parent: its children follow, indented
            stack.append((indent, name))
            last = None
            continue
        last = Entry(dotted, value, comment)
        last_indent = indent + len(name)
        keys.append(last)
    return groups, keys


def schema_entries(schema, prefix: str = "") -> list[Entry]:
    """The keys whose meaning is written in the schema instead (a field's metadata "help"), with their defaults."""
    out = []
    for f in fields(schema):
        if f.default_factory is not MISSING and is_dataclass(f.default_factory):
            out += schema_entries(f.default_factory, f"{prefix}{f.name}.")
        elif "help" in f.metadata:
            default = "null" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) \
                else str(f.default)
            out.append(Entry(f"{prefix}{f.name}", default, f.metadata["help"]))
    return out


def group_options(conf_dir: str | Path, group: str) -> list[str]:
    """The options of a config group: the names of its YAML files."""
    return sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))


def _item(label: str, text: str) -> str:
    indent = " " * 28
    head = f"  {label}"
    if len(head) >= len(indent) - 1:  # a long key: its meaning starts on the next line
        return head + "\n" + textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent,
                                            break_on_hyphens=False)
    return textwrap.fill(text, WIDTH, initial_indent=head.ljust(len(indent)), subsequent_indent=indent,
                         break_on_hyphens=False)


def config_help(config_name: str, conf_dir: str | Path, schema_keys: list[Entry] = ()) -> str:
    """The "Groups" and "Keys" sections of the help of the root config <conf_dir>/<config_name>.yaml; schema_keys
    (`schema_entries`) add the keys the YAML does not set."""
    conf = Path(conf_dir)
    groups, keys = parse((conf / f"{config_name}.yaml").read_text())
    keys += [k for k in schema_keys if k.name not in {y.name for y in keys}]
    lines = ["== Groups: group=option ==", ""]
    for g in groups:
        options = group_options(conf, g.name)
        default = "none" if g.default == "null" else g.default
        lines.append(_item(g.name, f"{g.meaning}. Options: {', '.join(options)} (default: {default})"))
    lines += ["", "== Keys: key=value (default after =) ==", ""]
    for k in keys:
        shown = k.name if k.default.startswith("${") else \
            f"{k.name} (required)" if k.default == "???" else f"{k.name}={k.default}"
        lines.append(_item(shown, k.meaning))
    return "\n".join(lines + [""]).replace("$", "$$")  # Hydra passes the template through string.Template
