"""Settings objects checked by their declared types, once, before anything starts.

Every settings dataclass of the project (`ImageSettings`, `PrepareSettings`,
`SampleSpec`, `AlexNetConfig`, `TrainConfig`) calls `check_types(self)` first
thing: a value from a TOML file, a `--set key=value`, a Prefect parameter or a
checkpoint that is not of the field's declared type is a ValueError naming the
field, the type it wants and what it got, instead of a TypeError deep inside a
run. An int is accepted for a float field (and stored as a float); a float is
never taken for an int (`epochs=2.5` is an error, not 3 epochs); NaN and the
infinities are refused everywhere.
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


def check_types(obj: Any, prefix: str = "") -> None:
    """Raise ValueError for the first field of dataclass `obj` whose value is not of its type.

    Fields annotated with another dataclass are left to that class's own check.
    """
    for f in dataclasses.fields(obj):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if not set(kind.replace(" ", "").split("|")) <= {"int", "float", "bool", "str", "None"}:
            continue
        value = getattr(obj, f.name)
        ok, stored = _ok(kind, value)
        if not ok:
            wants = " or ".join(_WORDS.get(k.strip(), "none") for k in kind.split("|"))
            raise ValueError(f"{prefix}{f.name} must be {wants}, got {value!r}")
        if stored is not value:
            object.__setattr__(obj, f.name, stored)  # works on frozen dataclasses too


# --- settings as command-line options -------------------------------------------------
#
# A field declared with `option(default, "help")` is also a command-line option: its
# flag is the field's name with dashes (`shard_size` -> `--shard-size`), its type and
# default are the field's, its help text is here. `add_options` puts a dataclass's
# options on a parser; `from_options` builds the dataclass back from the parsed
# arguments. So a setting is declared, defaulted and explained in one place.

_PARSERS = {"int": int, "float": float, "str": str}


def option(default: Any, help: str, **argparse_extras: Any) -> Any:
    """A dataclass field that is also a command-line option (`choices=`, `minimum=`)."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_extras})


def _minimum(parse: Any, minimum: float) -> Any:
    def checked(text: str) -> Any:
        value = parse(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
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
        helptext, minimum = meta.pop("help"), meta.pop("minimum", None)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = None if inherit else f.default
        if inherit:
            helptext += f" (default: the data root's own; {f.default} for a new one)"
        if kind == "bool":
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=helptext)
            continue
        parse = _PARSERS[kind.split("|")[0].strip()]
        if minimum is not None:
            parse = _minimum(parse, minimum)
        parser.add_argument(flag, dest=f.name, type=parse, default=default, help=helptext, **meta)


def from_options(cls: type, args: Any, **others: Any) -> Any:
    """`cls` built from the parsed options that `add_options` added (plus `others`)."""
    values = {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}
    return cls(**values, **others)
