"""Fabric profiles: TOML data files (one per profile) -> frozen dataclasses.

A profile file has `description`, `family`, optionally `extends = "other-profile"`, and
two tables of variables, `[variables.NAME]` (applied by the launcher) and
`[optional.NAME]` (reported, never applied by default); each variable has `value`,
`source` and `note`. A profile that extends another inherits its family and its
variables; its own entries override by name, and an entry moves between the applied
and the optional table when the child lists it in the other one.

Only stdlib imports here: `cordee env show` must stay instant on a login node.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cordee.errors import InputError
from cordee.fileio import read_toml

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FAMILIES = ("slingshot", "infiniband", "ethernet", "local")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = {"description", "family", "extends", "variables", "optional"}
_VAR_KEYS = {"value", "source", "note"}


@dataclass(frozen=True)
class ProfileVar:
    name: str
    value: str
    source: str
    note: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    family: str
    variables: tuple[ProfileVar, ...]
    optional: tuple[ProfileVar, ...]
    extends: str | None = None

    def as_env(self) -> dict[str, str]:
        """The variables the launcher applies (optional ones excluded)."""
        return {v.name: v.value for v in self.variables}

    def get(self, name: str) -> ProfileVar | None:
        """The applied or optional variable called `name`, or None."""
        for v in self.variables + self.optional:
            if v.name == name:
                return v
        return None


def _dir(data_dir: str | os.PathLike[str] | None) -> str:
    return DATA_DIR if data_dir is None else os.fspath(data_dir)


def names(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the known profiles (file stems), sorted."""
    try:
        files = os.listdir(_dir(data_dir))
    except OSError:
        return []
    return sorted(f[:-5] for f in files if f.endswith(".toml") and _NAME_RE.match(f[:-5]))


def _unknown(name: str, known: list[str]) -> str:
    return f"unknown profile {name!r}; known profiles: {', '.join(known) or '(none)'}"


def _read(name: str, d: str) -> tuple[str, dict]:
    path = os.path.join(d, f"{name}.toml")
    return path, read_toml(path, "profile")


def _str_field(path: str, data: dict, field: str, required: bool) -> str | None:
    if field not in data:
        if required:
            raise InputError(f"{path}: field {field!r} is required (a non-empty string)")
        return None
    value = data[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: field {field!r} must be a non-empty string, got {value!r}")
    return value


def _vars(path: str, data: dict, table: str) -> dict[str, ProfileVar]:
    raw = data.get(table, {})
    if not isinstance(raw, dict):
        raise InputError(f"{path}: field {table!r} must be a table of [{table}.NAME] entries")
    out: dict[str, ProfileVar] = {}
    for name, entry in raw.items():
        where = f"{table}.{name}"
        if not _VAR_RE.match(name):
            raise InputError(f"{path}: field {where!r}: not a valid environment variable name")
        if not isinstance(entry, dict):
            raise InputError(f"{path}: field {where!r} must be a table with keys value, source, note")
        extra = sorted(set(entry) - _VAR_KEYS)
        if extra:
            raise InputError(
                f"{path}: field {where!r}: unknown key(s) {', '.join(extra)}; allowed: value, source, note"
            )
        value = entry.get("value")
        if not isinstance(value, str):
            raise InputError(
                f"{path}: field '{where}.value' must be a string (quote numbers: value = \"1\"), "
                f"got {value!r}"
            )
        for key in ("source", "note"):
            text = entry.get(key)
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{path}: field '{where}.{key}' must be a non-empty string, got {text!r}")
        out[name] = ProfileVar(name, value, entry["source"].strip(), entry["note"].strip())
    return out


def _resolve(name: str, d: str, chain: tuple[str, ...]) -> Profile:
    path, data = _read(name, d)
    extra = sorted(set(data) - _TOP_KEYS)
    if extra:
        raise InputError(
            f"{path}: unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    description = _str_field(path, data, "description", required=True)
    parent_name = _str_field(path, data, "extends", required=False)
    family = _str_field(path, data, "family", required=parent_name is None)
    if family is not None and family not in FAMILIES:
        raise InputError(f"{path}: field 'family' is {family!r}; allowed: {', '.join(FAMILIES)}")
    applied = _vars(path, data, "variables")
    optional = _vars(path, data, "optional")
    both = sorted(set(applied) & set(optional))
    if both:
        raise InputError(f"{path}: {', '.join(both)} listed in both 'variables' and 'optional'")

    if parent_name is None:
        return Profile(name, description, family, tuple(applied.values()), tuple(optional.values()))

    if parent_name in chain + (name,):
        cycle = " -> ".join(chain + (name, parent_name))
        raise InputError(f"{path}: field 'extends': inheritance cycle {cycle}")
    known = names(d)
    if parent_name not in known:
        raise InputError(f"{path}: field 'extends': {_unknown(parent_name, known)}")
    parent = _resolve(parent_name, d, chain + (name,))
    merged = {v.name: v for v in parent.variables if v.name not in optional}
    merged.update(applied)
    merged_opt = {v.name: v for v in parent.optional if v.name not in applied}
    merged_opt.update(optional)
    return Profile(
        name,
        description,
        family or parent.family,
        tuple(merged.values()),
        tuple(merged_opt.values()),
        extends=parent_name,
    )


def load(name: str, data_dir: str | os.PathLike[str] | None = None) -> Profile:
    """Load profile `name` with its `extends` chain resolved. Raises InputError."""
    d = _dir(data_dir)
    known = names(d)
    if name not in known:
        raise InputError(_unknown(name, known))
    return _resolve(name, d, ())
