"""Quoting filters for the templates: one per output format, each tested against that format's own
parser (tests/test_render_injection.py). Values reach these filters already validated
(images/spec/fields.py rejects control and line-separator characters); the filters still refuse
anything that would break a line, so a validation gap fails loudly instead of injecting.
"""

from __future__ import annotations

import json
import shlex

from cordee.images.spec.fields import unsafe_char


class QuotingError(ValueError):
    """A value that no quoting can make safe reached a template (a validation gap)."""


def _guard(value: object) -> str:
    if not isinstance(value, str):
        raise QuotingError(f"expected a string, got {type(value).__name__} {value!r}")
    bad = unsafe_char(value)
    if bad is not None:
        raise QuotingError(f"{value!r} contains U+{ord(bad):04X}")
    return value


def sh_word(value: object) -> str:
    """One POSIX shell word (RUN lines, which buildah hands to /bin/sh -c unchanged)."""
    return shlex.quote(_guard(value))


def sh_command(words: list) -> str:
    """A command line from a list of words, each quoted: `["echo", x]` -> `echo 'x'`."""
    return " ".join(sh_word(w) for w in words)


def sh_commands(commands: list[list]) -> str:
    """Commands joined with `&&`, one per continued line (a failing step stops the RUN)."""
    return " \\\n    && ".join(sh_command(c) for c in commands)


def containerfile_value(value: object) -> str:
    """An ENV or LABEL value. Single quotes: buildah (and dockerfile-parse) take everything inside
    literally, with no $VAR substitution and no backslash escapes; a single quote itself is closed,
    escaped and reopened, as in a shell: it's -> 'it'\\''s'. (Double quotes would need \\$ and \\\\,
    which buildah and dockerfile-parse read differently.)"""
    return "'" + _guard(value).replace("'", "'\\''") + "'"


def toml_string(value: object) -> str:
    """A TOML basic string: backslash and double quote escaped. The control characters that
    would need \\uXXXX escapes never get here (_guard refuses them)."""
    return '"' + _guard(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_bool(value: object) -> str:
    if not isinstance(value, bool):
        raise QuotingError(f"expected a boolean, got {value!r}")
    return "true" if value else "false"


def edf_literal(value: object) -> str:
    """A value the container must see literally: EDF expands ${VAR} in every value and reads
    $${VAR} as the literal ${VAR}. Values holding '$$' are rejected at validation (ambiguous)."""
    text = _guard(value)
    if "$$" in text:
        raise QuotingError(f"{text!r} contains '$$', which an EDF cannot carry literally")
    return text.replace("${", "$${")


def edf_unescape(value: str) -> str:
    """The inverse of edf_literal (for tests and for reading rendered EDFs back)."""
    return value.replace("$${", "${")


def yaml_string(value: object) -> str:
    """A YAML double-quoted scalar: JSON's string syntax is a subset of it."""
    return json.dumps(_guard(value), ensure_ascii=False)


def yaml_scalar(value: object) -> str:
    """A YAML boolean or string (e.g. stackinator's unify: true | false | "when_possible")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return yaml_string(value)


FILTERS = {
    "sh": sh_word,
    "sh_command": sh_command,
    "sh_commands": sh_commands,
    "cf_value": containerfile_value,
    "toml_str": toml_string,
    "toml_bool": toml_bool,
    "edf_literal": edf_literal,
    "yaml_str": yaml_string,
    "yaml_scalar": yaml_scalar,
}
