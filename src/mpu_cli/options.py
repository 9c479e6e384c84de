"""How a setting is declared: its default, its meaning (what `--help` prints) and, for a number, its accepted
range, all next to its dataclass field; a choice is an Enum type. The rules every setting's declaration implies
are enforced here, once: `check_ranges` (declared ranges), and `check_settings` for a settings object read
without the config schema (SERVER.json, CLIENT.json, a command line's options): its types, its Enums' choices and
its ranges.

Standard library only: every settings type (the config schema, the client's, the server's) can use it.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import types
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


def enum_of(hint) -> type[enum.Enum] | None:
    """The Enum a field's type names (Optional included), else None."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return t
    return None


# A plain field type and what a value of it is called in a refusal.
_KINDS = {float: ((int, float), "a number"), int: ((int,), "an integer"), bool: ((bool,), "true or false"),
          str: ((str,), "a string")}


def check_settings(obj, cls, prefix: str = "") -> None:
    """A settings object built without the config schema (from JSON, or a command line's options), checked as the
    schema checks mpu-run's: every value of its field's type (a choice given by name becomes the Enum member),
    every number finite and inside its declared range. ConfigError with one line naming the key (`prefix` + the
    field's name), the value and what is accepted."""
    for f, hint in settings_fields(cls):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        if value is None and type(None) in args:
            continue
        choices = enum_of(hint)
        if choices is not None:
            if not isinstance(value, choices):
                try:
                    setattr(obj, f.name, choices(value))
                except ValueError:
                    raise not_one_of(name, value, [c.value for c in choices]) from None
            continue
        kind = next((a for a in args if a in _KINDS), None)
        if kind is None:
            continue
        accepted, words = _KINDS[kind]
        if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{name}={value!r} is not {words}; accepted: {words}")
        if kind is float and not math.isfinite(value):
            bounds = accepted_range(f)
            raise ConfigError(f"{name}={value!r} is not a finite number; accepted: a finite number"
                              f"{' ' + str(bounds) if bounds else ''}")
    check_ranges(obj, cls, prefix)


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
