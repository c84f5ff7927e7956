"""Grammars of the strings in image specs: one Str field per kind of value (names, versions,
URLs, paths, Spack specs, free text). Strict where a value has a grammar, because these strings
end up in shell lines, Containerfile instructions, TOML and YAML (images/README.md lists them).
"""

from __future__ import annotations

import re

from cordee.edf.fields import BIND_FLAGS, SQSH
from cordee.images.spec.fields import Str

NAME_RE = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"  # image name = a podman repository path component
ENV_NAME = Str("an environment variable name [A-Za-z_][A-Za-z0-9_]*", r"[A-Za-z_][A-Za-z0-9_]*", max_len=128)
_SEG = r"[A-Za-z0-9._+@-]+"


def _no_dot_segments(value: str) -> str | None:
    parts = value.strip("/").split("/")
    if any(p in (".", "..") for p in parts):
        return "must not contain '.' or '..' components"
    return None


ABS_PATH = Str(
    "an absolute path of letters, digits and ._+@- (no '..', no spaces)",
    rf"/(?:{_SEG}(?:/{_SEG})*)?",
    check=_no_dot_segments,
    max_len=256,
)
REL_PATH = Str(
    "a relative path of letters, digits and ._- below the spec's folder (no '..')",
    r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9._-]+)*",
    check=_no_dot_segments,
    max_len=256,
)
HTTPS_URL = Str(
    "an https:// URL of letters, digits and ._~%+=-/ (query ?k=v&... allowed)",
    r"https://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9._~%+=@-]*)*(?:\?[A-Za-z0-9._~%+=&-]*)?",
    max_len=512,
)
VERSION = Str(
    "a version such as 1.18.0 or 2.17.6 (digits and dots, optional -suffix)",
    r"[0-9]+(?:\.[0-9]+)*(?:[-+.][0-9A-Za-z]+)*",
    max_len=64,
)
SHA256 = Str("64 lowercase hex digits (sha256)", r"[0-9a-f]{64}")
GIT_COMMIT = Str("a git commit: 12 to 40 lowercase hex digits", r"[0-9a-f]{12,40}")
DEB_PACKAGE = Str("a Debian package name [a-z0-9][a-z0-9+.-]+", r"[a-z0-9][a-z0-9+.-]+", max_len=100)
# Exact pins only: an image is rebuilt from the same spec months later and must come out the same.
PIP_REQUIREMENT = Str(
    "an exact pin NAME==VERSION or NAME[extra,...]==VERSION (e.g. torch==2.13.0)",
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?"
    r"==[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?(?:\+[A-Za-z0-9.]+)?",
    max_len=200,
)
# Fully qualified (registry host first: no short-name guessing) and with a tag or digest (no :latest).
IMAGE_REF = Str(
    "a fully qualified image reference REGISTRY/PATH:TAG or REGISTRY/PATH@sha256:DIGEST "
    "(e.g. nvcr.io/nvidia/pytorch:25.06-py3)",
    r"(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})",
    max_len=256,
)
TEXT = Str("text without control, format or line-separator characters", max_len=4096, empty=True)
LINE = Str("one line of text (no control characters), 1 to 200 characters", max_len=200)


def _edf_literal(value: str) -> str | None:
    # EDF expands ${VAR} and reads $${VAR} as a literal; rendering turns "${" into "$${", which is
    # only unambiguous when the value holds no "$$" of its own.
    return "must not contain '$$' (EDF's escape sequence)" if "$$" in value else None


# Not empty: an empty value in an EDF's [env] unsets the variable, in a Containerfile it sets "".
LITERAL = Str(
    "non-empty text without control characters and without '$$' (used literally: no ${VAR} expansion)",
    check=_edf_literal,
    max_len=4096,
)
LABEL_KEY = Str("a label key in reverse-DNS form [a-z0-9]+([._-][a-z0-9]+)*", NAME_RE, max_len=128)
ANNOTATION_KEY = Str(
    "a dotted annotation key such as com.hooks.ssh.enabled ([a-z0-9_-] parts)",
    r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+",
    max_len=128,
)


def _mount(value: str) -> str | None:
    parts = value.split(":")
    if len(parts) > 3 or not parts[0]:
        return "must be SRC[:DST[:FLAGS]] with a non-empty SRC"
    if len(parts) == 1 and not parts[0].startswith(("/", "${")):
        return "a mount without DST needs an absolute SRC"
    if len(parts) >= 2 and not parts[1].startswith("/"):
        return f"destination {parts[1]!r} must be an absolute path"
    dst = parts[1] if len(parts) >= 2 else parts[0]
    if ".." in dst.split("/"):  # as `cordee edf check` (edf/fields.py parse_mount) refuses it
        return f"destination {dst!r} must not contain '..'"
    if len(parts) == 3:
        if not re.fullmatch(r"[a-z0-9]+(?:\+[a-z0-9]+)*", parts[2]):
            return f"flags {parts[2]!r} must be lowercase words joined by '+' (e.g. ro, sqsh, ro+private)"
        # The flag table of `cordee edf check` (Enroot's mount options and CE's sqsh): any other
        # flag would render an EDF that the check and the Container Engine refuse.
        flags = parts[2].split("+")
        for flag in flags:
            if flag != SQSH and flag not in BIND_FLAGS:
                return f"unknown mount flag {flag!r} (Enroot's options such as ro, private, nosuid; or sqsh)"
        if SQSH in flags and len(flags) > 1:  # as edf check: a squashfs mount takes no other flag
            return f"flags {parts[2]!r}: sqsh must be the only flag"
    return None


MOUNT = Str("SRC[:DST[:FLAGS]] as in an EDF (e.g. /capstor or ${SCRATCH}/d.sqsh:/data:sqsh)", check=_mount)

# Spack spec strings (uenv): space-separated tokens, each of a known shape.
_SPACK_NAME = r"[a-z0-9][a-z0-9_-]*"
_SPACK_VER = r"@[A-Za-z0-9._:,=-]+"
_SPACK_TOKEN = (
    rf"(?:{_SPACK_NAME}(?:{_SPACK_VER})?|[+~][a-z0-9_]+|[a-z0-9_]+=[A-Za-z0-9._,:+-]+"
    rf"|\^{_SPACK_NAME}(?:{_SPACK_VER})?|%{_SPACK_NAME}(?:{_SPACK_VER})?)"
)
SPACK_SPEC = Str(
    "a Spack spec: NAME[@VERSION] then space-separated +variant, ~variant, key=value, ^dep, %compiler",
    rf"{_SPACK_NAME}(?:{_SPACK_VER})?(?: {_SPACK_TOKEN})*",
    max_len=300,
)
SPACK_VARIANT = Str(
    "a Spack variant: +name, ~name or key=value", r"[+~][a-z0-9_]+|[a-z0-9_]+=[A-Za-z0-9._,:+-]+"
)
GCC_SPEC = Str(
    "gcc@MAJOR[.MINOR[.PATCH]] with one-digit minor and patch (stackinator 4)",
    r"gcc@[0-9]{1,2}(?:\.[0-9](?:\.[0-9])?)?",
)
GIT_REF = Str("a git branch, tag or commit ([A-Za-z0-9._/-])", r"[A-Za-z0-9][A-Za-z0-9._/-]*", max_len=128)
