"""Typed fields for image specs: each checks one YAML value and returns it normalized.

A spec is data that ends up in shell lines, Containerfile instructions, TOML and YAML, so every
string is checked before anything is rendered: strict patterns where a value has a grammar
(package names, versions, URLs, paths) and, for free text, no character that a line-based format
could misread (control characters, line and paragraph separators, bidi and other format
characters, unassigned code points). Quoting then happens in the templates (images/quoting.py).

A failed check raises `Invalid`, carrying one Problem (field path, problem, what is allowed) per
independent error: lists, mappings and structs check every entry before they raise, so one run
reports every error of a spec; load.py adds the file name. Each field also names its type in a few
words (`doc`), the words of the field tables in images/README.md (reference.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any, NamedTuple

# Unicode categories no spec string may contain: Cc control (tab, newline, NUL, DEL, C1), Cf format
# (bidi overrides, zero-width), Cs surrogates, Co private use, Cn unassigned, Zl/Zp line/paragraph
# separators (YAML and Python's splitlines break lines there).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
REQUIRED = object()


class Problem(NamedTuple):
    path: str  # field path, e.g. network.variant or python.requirements[0]
    problem: str
    allowed: str = ""

    def message(self) -> str:
        text = f"field {self.path!r}: {self.problem}"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


class Invalid(Exception):
    """Values that do not fit their fields: one Problem each (`Invalid(path, problem, allowed)` for one)."""

    def __init__(self, path: str, problem: str, allowed: str = "") -> None:
        super().__init__(path, problem, allowed)
        self.problems = [Problem(path, problem, allowed)]

    @classmethod
    def many(cls, problems: list[Problem]) -> Invalid:
        error = cls(*problems[0])
        error.problems = list(problems)
        return error


class Collector:
    """Runs checks that go on after a failure: keeps each Invalid's problems, raises them together."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def call(self, check: Callable[..., Any], *args: Any) -> Any:
        """check(*args), or None when it raises Invalid (whose problems are kept)."""
        try:
            return check(*args)
        except Invalid as e:
            self.problems.extend(e.problems)
            return None

    def check(self, field, value: Any, path: str) -> Any:
        return self.call(field.check, value, path)

    def add(self, path: str, problem: str, allowed: str = "") -> None:
        self.problems.append(Problem(path, problem, allowed))

    def raise_if_any(self) -> None:
        if self.problems:
            raise Invalid.many(self.problems)


def _enumeration(values: tuple) -> str:
    return " | ".join(f"`{str(v).lower() if isinstance(v, bool) else v}`" for v in values)


def unsafe_char(text: str) -> str | None:
    """The first character of `text` no rendered file may contain, or None."""
    for ch in text:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            return ch
    return None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), type(value).__name__)


class Str:
    """A string; `pattern` (full match) or `choices` restrict it, `check` adds a rule of its own."""

    def __init__(
        self,
        allowed: str,
        pattern: str | None = None,
        choices: tuple[str, ...] | None = None,
        check: Callable[[str], str | None] | None = None,
        max_len: int = 1024,
        empty: bool = False,
        doc: str | None = None,
    ) -> None:
        self.allowed = allowed if choices is None else ", ".join(choices)
        self.doc = doc or (allowed if choices is None else _enumeration(choices))
        self.pattern = re.compile(pattern) if pattern else None
        self.choices, self.check_fn, self.max_len, self.empty = choices, check, max_len, empty

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            hint = " (quote it in the YAML)" if isinstance(value, int | float | bool) else ""
            raise Invalid(path, f"must be a string, got {_type_name(value)} {value!r}{hint}", self.allowed)
        bad = unsafe_char(value)
        if bad is not None:
            raise Invalid(
                path,
                f"contains the character U+{ord(bad):04X} ({unicodedata.name(bad, 'unnamed')}), which no "
                "rendered file can carry safely",
                self.allowed,
            )
        if not value and not self.empty:
            raise Invalid(path, "must not be empty", self.allowed)
        if len(value) > self.max_len:
            raise Invalid(path, f"is {len(value)} characters long (at most {self.max_len})", self.allowed)
        if self.choices is not None and value not in self.choices:
            raise Invalid(path, f"{value!r} is not allowed", self.allowed)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise Invalid(path, f"{value!r} is not valid", self.allowed)
        if self.check_fn is not None:
            problem = self.check_fn(value)
            if problem:
                raise Invalid(path, problem, self.allowed)
        return value


class Bool:
    allowed = "true or false"
    doc = "bool"

    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise Invalid(path, f"must be true or false, got {_type_name(value)} {value!r}", self.allowed)
        return value


class Choice:
    """One of a fixed set of YAML values of any type (e.g. true, false or "when_possible")."""

    def __init__(self, *values: Any) -> None:
        self.values = values
        self.allowed = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
        self.doc = _enumeration(values)

    def check(self, value: Any, path: str) -> Any:
        for v in self.values:
            if type(v) is type(value) and v == value:
                return value
        raise Invalid(path, f"{value!r} is not allowed", self.allowed)


class Optional:
    """`inner`, or null."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.allowed = f"{inner.allowed}, or null"
        enumerated = isinstance(inner, Choice) or getattr(inner, "choices", None) is not None
        self.doc = f"{inner.doc} | null" if enumerated else f"{inner.doc} or null"

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


class List:
    def __init__(self, item, min_items: int = 0, unique: bool = True, max_items: int = 256) -> None:
        self.item, self.min_items, self.unique, self.max_items = item, min_items, unique, max_items
        self.allowed = f"a list of: {item.allowed}"
        self.doc = f"list: {item.doc}" + (f", at least {min_items}" if min_items else "")

    def check(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise Invalid(path, f"must be a list, got {_type_name(value)} {value!r}", self.allowed)
        if not self.min_items <= len(value) <= self.max_items:
            raise Invalid(path, f"has {len(value)} entries", f"{self.min_items} to {self.max_items} entries")
        errors = Collector()
        out = [errors.check(self.item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.unique:
            seen: set = set()
            for i, v in enumerate(out):
                if v is not None and v in seen:
                    errors.add(f"{path}[{i}]", f"{v!r} is listed twice", "each entry once")
                seen.add(v)
        errors.raise_if_any()
        return out


class Map:
    """A mapping with keys of one grammar (e.g. environment variable names) to values of one field."""

    def __init__(self, key: Str, value, max_items: int = 256) -> None:
        self.key, self.value, self.max_items = key, value, max_items
        self.allowed = f"a mapping of {key.allowed} to {value.allowed}"
        self.doc = f"map: {key.doc} -> {value.doc}"

    def check(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise Invalid(path, f"must be a mapping, got {_type_name(value)} {value!r}", self.allowed)
        if len(value) > self.max_items:
            raise Invalid(path, f"has {len(value)} entries", f"at most {self.max_items}")
        errors, out = Collector(), {}
        for k, v in value.items():
            if not isinstance(k, str):
                errors.add(path, f"key {k!r} must be a string", self.key.allowed)
                continue
            errors.check(self.key, k, join(path, k))
            out[k] = errors.check(self.value, v, join(path, k))
        errors.raise_if_any()
        return dict(sorted(out.items()))


class Struct:
    """A mapping with known keys: each maps to (field, default); REQUIRED marks required keys.
    Unknown keys are errors (a typo must not silently fall back to a default). `check` is a rule
    between the keys, run once each of them is valid; `doc` names a struct that images/README.md
    documents in a table of its own (without it, its keys are rows of the enclosing table)."""

    def __init__(
        self,
        fields: dict[str, tuple[Any, Any]],
        check: Callable[[dict, str], None] | None = None,
        doc: str | None = None,
    ):
        self.fields, self.post, self.doc = fields, check, doc
        self.allowed = "a mapping with keys " + ", ".join(fields)

    def check(self, value: Any, path: str) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise Invalid(path or "(top level)", f"must be a mapping, got {_type_name(value)}", self.allowed)
        errors = Collector()
        for k in value:
            if k not in self.fields:
                errors.add(
                    join(path, str(k)),
                    "is not a known field",
                    f"{', '.join(self.fields)} (in {path or 'the spec'})",
                )
        out = {}
        for name, (field, default) in self.fields.items():
            where = join(path, name)
            if name in value:
                out[name] = errors.check(field, value[name], where)
            elif default is REQUIRED:
                errors.add(where, "is required", field.allowed)
            else:
                out[name] = errors.check(field, default, where) if default is not None else None
        errors.raise_if_any()
        if self.post is not None:
            self.post(out, path)
        return out
