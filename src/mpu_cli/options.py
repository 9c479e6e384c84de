"""How a setting is declared: its default, its meaning (what `--help` prints) and, for a number, its accepted
range, all next to its dataclass field; `check_ranges` is the one place every declared range is enforced.

Standard library only: every settings type (the config schema, the client's, the server's) can use it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """Bad user input: the CLI prints the one-line message and exits with code 2."""


@dataclass(frozen=True)
class Range:
    """An interval of accepted numbers; a missing bound is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `> low` instead of `>= low`
    high_open: bool = False

    def accepts(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {_num(self.low)}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {_num(self.high)}"
        if low and high:
            return f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        return low or high or "any number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def option(default=dataclasses.MISSING, help: str = "", *, ge=None, gt=None, le=None, lt=None,
           factory=dataclasses.MISSING, **metadata):
    """A dataclass field with its meaning and accepted range: `kappa: float = option(0.01, "noise level", ge=0)`.
    `factory` builds a mutable default (a dict, a nested settings object) as `default_factory` does; `metadata`
    adds the owner's own marks (e.g. secret=True)."""
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise TypeError("option(): give at most one lower and one upper bound")
    low, high = (gt if gt is not None else ge), (lt if lt is not None else le)
    metadata = {"help": help, **metadata}
    if low is not None or high is not None:
        metadata["range"] = Range(low, high, gt is not None, lt is not None)
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def field_of(cls, name: str):
    """The field `name` of the settings type `cls` again (default, meaning, range), for a schema that also holds
    that setting: it stays declared once, by its owner."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)


def meaning(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def accepted_range(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range")


def settings_fields(cls) -> list[tuple[dataclasses.Field, object]]:
    """(field, its resolved type) of a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def nested_settings(hint) -> type | None:
    """The settings dataclass a field's type names (Optional included), else None."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None


def leaf_fields(cls, prefix: str = ""):
    """(dotted name, field, type) of every setting of `cls`, nested settings walked into."""
    for f, hint in settings_fields(cls):
        sub = nested_settings(hint)
        if sub is not None:
            yield from leaf_fields(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


def check_ranges(cfg, schema: type, prefix: str = "") -> None:
    """Every number of `cfg` (a config or an object with the fields of `schema`) inside its field's declared range;
    null passes (a field that accepts null says what null means)."""
    for f, hint in settings_fields(schema):
        value = cfg.get(f.name) if hasattr(cfg, "get") else getattr(cfg, f.name, None)
        sub = nested_settings(hint)
        if sub is not None and value is not None:
            check_ranges(value, sub, f"{prefix}{f.name}.")
            continue
        bounds = accepted_range(f)
        if bounds is None or value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            raise ConfigError(f"{prefix}{f.name}={value!r} is not a number; accepted: a number {bounds}")
        if not bounds.accepts(value):
            raise ConfigError(f"{prefix}{f.name}={value} must be {bounds}")


def did_you_mean(value, options) -> str:
    """"; did you mean 'npo'?" for the nearest accepted option, or "" when none is near."""
    near = difflib.get_close_matches(str(value).lower(), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


def not_one_of(key: str, value, options) -> ConfigError:
    """The one-line refusal of a value outside a fixed set of choices."""
    options = [str(o) for o in options]
    return ConfigError(f"{key}={str(value)!r} is not one of {options}{did_you_mean(value, options)}")
