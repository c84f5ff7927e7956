"""`${VAR}` expansion in EDF values, by the rules CSCS documents for the Container Engine
(cscs-docs software/container-engine/edf.md, "Environment variable expansion"):

- `${VAR}` takes VAR's value; an undefined VAR is an error;
- `${VAR:-}` is the empty string when VAR is undefined (the only default form documented);
- `$${VAR}` is the literal text `${VAR}`;
- only host variables can be referenced: `[env]` entries cannot refer to each other.

Not documented, so reported rather than guessed silently: `${VAR:-default}` with a non-empty
default (a warning; cordee substitutes the default as a shell would) and `$VAR` without braces
(a warning: CE leaves it as it is). CE resolves variables from the host *and the image*; the
image's variables cannot be known here, so a variable only the image defines reads as undefined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<dash>:-(?P<default>.*))?", re.S)
_BARE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")


class Expansion(NamedTuple):
    value: str
    errors: list[str]
    warnings: list[str]


def expand(text: str, environ: Mapping[str, str]) -> Expansion:
    """Expand `text` with `environ`; every problem is collected, none raised."""
    out: list[str] = []
    errors: list[str] = []
    warnings: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("$${", i):  # escape: the literal `${`, the rest is plain text
            out.append("${")
            i += 3
        elif text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                errors.append(f"unterminated '${{' at character {i + 1} (write $${{ for a literal '${{')")
                out.append(text[i:])
                break
            out.append(_substitute(text[i + 2 : end], environ, errors, warnings))
            i = end + 1
        else:
            bare = _BARE.match(text, i)
            if bare and not (i > 0 and text[i - 1] == "$"):
                warnings.append(
                    f"'{bare.group()}' is not expanded: the Container Engine expands only "
                    f"${{{bare.group()[1:]}}}"
                )
            out.append(text[i])
            i += 1
    return Expansion("".join(out), errors, warnings)


def _substitute(body: str, environ: Mapping[str, str], errors: list[str], warnings: list[str]) -> str:
    match = _BODY.fullmatch(body)
    if match is None:
        errors.append(
            f"'${{{body}}}' is not a variable reference: write ${{NAME}} or ${{NAME:-}} "
            "(NAME: letters, digits, '_', not starting with a digit)"
        )
        return "${" + body + "}"
    name, default = match.group("name"), match.group("default")
    if default:
        warnings.append(
            f"${{{name}:-{default}}}: only ${{{name}:-}} (empty default) is documented for the "
            "Container Engine; cordee substitutes the default as a shell would, CE may not"
        )
    if name in environ:
        return environ[name]
    if match.group("dash") is None:
        errors.append(f"undefined variable {name} (write ${{{name}:-}} to allow it to be unset)")
        return ""
    return default
