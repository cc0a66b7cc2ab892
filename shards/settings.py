"""Settings objects checked by what their fields declare, once, when they are made.

Every settings dataclass of the project (`ImageSettings`, `PrepareSettings`,
`SampleSpec`, `AlexNetConfig`, `TrainConfig`) calls `check_fields(self)` first
thing in `__post_init__`, then checks what involves several fields: a settings
object that exists is valid, wherever its values came from (a TOML file, a
`--set key=value`, a command-line option, a Prefect parameter, a checkpoint).

`check_fields` checks each field against its declared type (an int is accepted
for a float field and stored as a float; a float is never taken for an int:
`epochs=2.5` is an error, not 3 epochs; NaN and the infinities are refused)
and against the rules declared on it with `option(...)` or `rule(...)`:
`choices`, `minimum`, `maximum` (inclusive), `above`, `below` (strict). The
command line takes the same declarations (choices, and the bounds checked
while parsing), so a rule is written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _ok(kind: str, value: Any) -> tuple[bool, Any]:
    """(whether `value` fits the annotation `kind`, the value to store)."""
    options = [k.strip() for k in kind.split("|")]
    if value is None:
        return "None" in options, value
    for option in options:
        if option == "bool" and isinstance(value, bool):
            return True, value
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value), float(value)
        if option == "str" and isinstance(value, str):
            return True, value
    return False, value


_BOUNDS = {  # rule: (how it reads, whether a value passes)
    "minimum": (">=", lambda v, b: v >= b),
    "maximum": ("<=", lambda v, b: v <= b),
    "above": (">", lambda v, b: v > b),
    "below": ("<", lambda v, b: v < b),
}


def check_fields(obj: Any, prefix: str = "") -> None:
    """Raise ValueError for the first field of dataclass `obj` whose value is not of its
    declared type, or breaks a rule declared on it (`choices`, bounds).

    Fields annotated with another dataclass are left to that class's own check.
    """
    for f in dataclasses.fields(obj):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if not set(kind.replace(" ", "").split("|")) <= {"int", "float", "bool", "str", "None"}:
            continue
        value = getattr(obj, f.name)
        name = prefix + f.name
        ok, stored = _ok(kind, value)
        if not ok:
            wants = " or ".join(_WORDS.get(k.strip(), "none") for k in kind.split("|"))
            raise ValueError(f"{name} must be {wants}, got {value!r}")
        if stored is not value:
            object.__setattr__(obj, f.name, stored)  # works on frozen dataclasses too
        if value is None:
            continue
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            listed = ", ".join(map(str, choices))
            raise ValueError(f"{name} must be one of {listed}, got {value!r}")
        broken = [
            r
            for r, (_, passes) in _BOUNDS.items()
            if r in f.metadata and not passes(value, f.metadata[r])
        ]
        if broken:
            wants = " and ".join(
                f"{_BOUNDS[r][0]} {f.metadata[r]}" for r in _BOUNDS if r in f.metadata
            )
            raise ValueError(f"{name} is out of range: {value!r} (must be {wants})")


# --- settings as command-line options -------------------------------------------------
#
# A field declared with `option(default, "help")` is also a command-line option: its
# flag is the field's name with dashes (`shard_size` -> `--shard-size`), its type and
# default are the field's, its help text is here. `add_options` puts a dataclass's
# options on a parser; `from_options` builds the dataclass back from the parsed
# arguments. So a setting is declared, defaulted and explained in one place.

_PARSERS = {"int": int, "float": float, "str": str}


def rule(default: Any, **rules: Any) -> Any:
    """A dataclass field with rules `check_fields` holds it to (`choices`, `minimum`,
    `maximum`, `above`, `below`); not a command-line option."""
    return dataclasses.field(default=default, metadata=rules)


def option(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field that is also a command-line option, with the same rules as `rule`."""
    return dataclasses.field(default=default, metadata={"help": help, **rules})


def _bounded(parse: Any, rules: dict) -> Any:
    """`parse` that also holds the value to the field's bounds (an argparse error)."""

    def checked(text: str) -> Any:
        value = parse(text)
        for r, (reads, passes) in _BOUNDS.items():
            if r in rules and not passes(value, rules[r]):
                raise argparse.ArgumentTypeError(f"must be {reads} {rules[r]}, got {value}")
        return value

    checked.__name__ = parse.__name__  # argparse names the type in its errors
    return checked


def option_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def add_options(
    parser: Any, cls: type, only: tuple[str, ...] | None = None, inherit: bool = False
) -> None:
    """Add `cls`'s option fields (or those named in `only`) to an argparse parser.

    `inherit`: default None, shown as "default: the data root's" (re-processing keeps
    the settings OUT was made with unless told otherwise).
    """
    for f in option_fields(cls):
        if only is not None and f.name not in only:
            continue
        meta = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        helptext = meta.pop("help")
        bounds = {r: meta.pop(r) for r in _BOUNDS if r in meta}
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = None if inherit else f.default
        if inherit:
            helptext += f" (default: the data root's own; {f.default} for a new one)"
        if kind == "bool":
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=helptext)
            continue
        parse = _PARSERS[kind.split("|")[0].strip()]
        if bounds:
            parse = _bounded(parse, bounds)
        parser.add_argument(flag, dest=f.name, type=parse, default=default, help=helptext, **meta)


def from_options(cls: type, args: Any, **others: Any) -> Any:
    """`cls` built from the parsed options that `add_options` added (plus `others`)."""
    values = {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}
    return cls(**values, **others)
