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
