"""The field tables of images/README.md, derived from the schema: each row's field path, type and
default. The meaning column is the README's own words; tests/test_image_readme.py holds the rest of
every table to these rows, both ways (no field missing, none extra, none described differently).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cordee.images.spec.fields import REQUIRED, Optional, Struct
from cordee.images.spec.schema import COMMON, CONTAINER, SOURCE, UENV_SPEC


class Row(NamedTuple):
    field: str  # dotted path, e.g. network.variant
    type: str  # the field's `doc`, e.g. "list: Debian package"
    default: str  # "required", or the default as YAML in backticks


def rows(
    struct: Struct, prefix: str = "", skip: tuple[str, ...] = (), only: tuple[str, ...] = ()
) -> list[Row]:
    """One row per value a spec can set below `struct`; a struct without a `doc` of its own is not a
    value but a section: its keys are rows."""
    out = []
    for name, (field, default) in struct.fields.items():
        if name in skip or (only and name not in only):
            continue
        inner = field.inner if isinstance(field, Optional) else field
        if isinstance(inner, Struct) and inner.doc is None:
            out += rows(inner, f"{prefix}{name}.")
        else:
            out.append(Row(f"{prefix}{name}", field.doc, default_text(default)))
    return out


def default_text(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    return f"`{_yaml(default)}`"


def _yaml(value: Any) -> str:
    """A default as a spec would write it: null, true, [], {}, '90' (quoted where YAML would read a
    bare word as something other than a string)."""
    import yaml  # deferred, as in load.py

    if isinstance(value, str):
        return value if yaml.safe_load(value) == value else f"'{value}'"
    if isinstance(value, list | dict) and value:
        raise ValueError(f"a default that is not empty: {value!r}")  # none today; render it then
    return {type(None): "null", bool: str(value).lower(), list: "[]", dict: "{}"}[type(value)]


def tables() -> dict[str, list[Row]]:
    """The README's heading -> the rows of the field table under it."""
    common = tuple(COMMON)
    return {
        "## Common fields": rows(CONTAINER, only=common),
        "## Container specs (`kind: container`)": rows(CONTAINER, skip=common),
        "### Sources (`sources.NAME`)": rows(SOURCE),
        "## uenv specs (`kind: uenv`)": rows(UENV_SPEC, skip=common),
    }


def markdown(row: Row) -> str:
    """A row as the README writes it, the meaning column left to the README."""
    cells = (f"`{row.field}`", row.type, row.default)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
