"""One EDF file on its own: TOML syntax, known keys and their types, `${VAR}` expansion, value
checks. Inheritance (base_environment) is applied by cordee.edf.load."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cordee.edf import fields
from cordee.edf.expand import expand
from cordee.errors import one_line
from cordee.fileio import ReadError, read_bounded

KEYS = ("base_environment", "image", "workdir", "entrypoint", "writable", "mounts", "env", "annotations")
SCALARS = ("image", "workdir", "entrypoint", "writable")

Report = Callable[[str, str, str, str], None]  # (file, field, severity, message)


class Layer(NamedTuple):
    bases: list[tuple[str, str]]  # (field, expanded EDF name or path)
    own: dict[str, Any]  # this file's values, in empty_values()'s shape; unset scalars are None


def empty_values() -> dict[str, Any]:
    return {**dict.fromkeys(SCALARS), "mounts": [], "env": {}, "annotations": {}, "chain": []}


def parse_layer(path: Path, environ: Mapping[str, str], report: Report) -> Layer | None:
    """None when the file cannot be read or is not TOML (reported); otherwise every value that
    passed its checks, the others reported and left out."""
    file = str(path)
    try:
        data = tomllib.loads(read_bounded(path).decode("utf-8"))
    except ReadError as e:
        report(file, "file", "error", e.reason)
        return None
    except UnicodeDecodeError as e:
        report(file, "file", "error", f"not UTF-8 text (byte {e.start})")
        return None
    except tomllib.TOMLDecodeError as e:  # its message carries line and column
        report(file, "toml", "error", f"TOML syntax: {one_line(str(e))}")
        return None
    except ValueError as e:  # from tomllib's int(): an integer of more than 4,300 digits
        report(file, "toml", "error", f"TOML value cordee cannot read: {one_line(str(e))[:120]}")
        return None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        report(file, "toml", "error", "TOML nested too deeply")
        return None
    parser = _Parser(file, environ, report)
    for key, value in data.items():
        if key in KEYS:
            getattr(parser, key)(value)
        else:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            report(file, key, "error", f"unknown key{hint}; allowed: {', '.join(KEYS)}")
    parser.own["chain"] = [file]
    return Layer(parser.bases, parser.own)


def _type_name(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a float"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def flatten(table: dict, prefix: str = ""):
    """TOML turns `com.hooks.ssh.enabled = ...` into nested tables; annotations are dotted names."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class _Parser:
    """One method per EDF key (named as the key), each checking and storing its value."""

    def __init__(self, file: str, environ: Mapping[str, str], report: Report) -> None:
        self.file, self.environ, self.report = file, environ, report
        self.own = empty_values()
        self.bases: list[tuple[str, str]] = []

    def _add(self, field: str, problems: list[tuple[str, str]]) -> None:
        for severity, message in problems:
            self.report(self.file, field, severity, message)

    def _wrong_type(self, field: str, value: object, wanted: str) -> None:
        self.report(self.file, field, "error", f"must be {wanted}, not {_type_name(value)}")

    def _expand(self, field: str, text: str) -> str | None:
        """The expanded text, or None when expansion failed (so later checks add no noise)."""
        result = expand(text, self.environ)
        self._add(field, [("error", m) for m in result.errors] + [("warning", m) for m in result.warnings])
        return None if result.errors else result.value

    def base_environment(self, value: object) -> None:
        if isinstance(value, str):
            items = [("base_environment", value)] if value else []  # the default "" names no base
        elif isinstance(value, list):
            items = [(f"base_environment[{i}]", item) for i, item in enumerate(value)]
        else:
            return self._wrong_type("base_environment", value, "a string or an array of strings")
        for field, item in items:
            if not (isinstance(item, str) and item):
                self._wrong_type(field, item, "a non-empty string (an EDF name or path)")
            elif (name := self._expand(field, item)) is not None:
                self.bases.append((field, name))

    def image(self, value: object) -> None:
        if not isinstance(value, str):
            return self._wrong_type("image", value, "a string")
        if (image := self._expand("image", value)) is not None:
            self.own["image"], problems = fields.check_image(image)
            self._add("image", problems)

    def workdir(self, value: object) -> None:
        if not isinstance(value, str):
            return self._wrong_type("workdir", value, "a string")
        workdir = self._expand("workdir", value)
        if workdir is None:
            return
        workdir = fields.resolve_relative(workdir)
        if not workdir.startswith("/"):
            self._add("workdir", [("error", f"'{workdir}' must be an absolute path")])
        self.own["workdir"] = workdir

    def entrypoint(self, value: object) -> None:
        self._boolean("entrypoint", value)

    def writable(self, value: object) -> None:
        self._boolean("writable", value)

    def _boolean(self, key: str, value: object) -> None:
        if isinstance(value, bool):
            self.own[key] = value
        else:
            self._wrong_type(key, value, "a boolean (true or false, without quotes)")

    def mounts(self, value: object) -> None:
        if not isinstance(value, list):
            return self._wrong_type("mounts", value, 'an array of strings (mounts = ["SRC:DST"])')
        for i, item in enumerate(value):
            field = f"mounts[{i}]"
            if not isinstance(item, str):
                self._wrong_type(field, item, "a string SRC:DST[:FLAGS]")
                continue
            text = self._expand(field, item)
            if text is None:
                continue
            mount, problems = fields.parse_mount(text)
            problems += fields.whole_home(item.split(":", 1)[0], text.split(":", 1)[0], self.environ)
            self._add(field, problems)
            if mount is not None and all(severity != "error" for severity, _ in problems):
                self.own["mounts"].append(mount)

    def env(self, value: object) -> None:
        if not isinstance(value, dict):
            return self._wrong_type("env", value, 'a table ([env] with NAME = "value" lines)')
        for name, item in value.items():
            field = f"env.{name}"
            self._add(field, fields.check_env_name(name))
            if not isinstance(item, str):
                self._wrong_type(field, item, 'a string ("" unsets the variable)')
            elif (text := self._expand(field, item)) is not None:
                self.own["env"][name] = text

    def annotations(self, value: object) -> None:
        if not isinstance(value, dict):
            return self._wrong_type("annotations", value, "a table ([annotations])")
        for name, item in flatten(value):
            field = f"annotations.{name}"
            if not isinstance(item, str):
                wanted = 'a string ("true", with quotes)' if isinstance(item, bool) else "a string"
                self._wrong_type(field, item, wanted)
                continue
            if (text := self._expand(field, item)) is not None:
                self._add(field, fields.check_annotation(name, text))
                self.own["annotations"][name] = text
