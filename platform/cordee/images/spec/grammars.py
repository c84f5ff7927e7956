"""Grammars of the strings in image specs: one Str field per kind of value (names, versions,
URLs, paths, Spack specs, free text). Strict where a value has a grammar, because these strings
end up in shell lines, Containerfile instructions, TOML and YAML (images/README.md lists them).
Where the EDF tooling (cordee.edf.fields) has the grammar, it is used from there: one grammar for
env names, image reference pieces and mounts, so a spec never renders an EDF `cordee edf check` refuses.
"""

from __future__ import annotations

from cordee.edf.expand import expand
from cordee.edf.fields import ENV_NAME_RE, IMAGE_DIGEST, IMAGE_PATH_COMPONENT, IMAGE_TAG, mount_syntax
from cordee.images.spec.fields import Str

NAME_RE = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"  # image name = a podman repository path component
ENV_NAME = Str(
    f"an environment variable name {ENV_NAME_RE.pattern}",
    ENV_NAME_RE.pattern,
    max_len=128,
    doc="variable name",
)
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
    doc="absolute path",
)
REL_PATH = Str(
    "a relative path of letters, digits and ._- below the spec's folder (no '..')",
    r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9._-]+)*",
    check=_no_dot_segments,
    max_len=256,
    doc="relative path",
)
HTTPS_URL = Str(
    "an https:// URL of letters, digits and ._~%+=-/ (query ?k=v&... allowed)",
    r"https://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9._~%+=@-]*)*(?:\?[A-Za-z0-9._~%+=&-]*)?",
    max_len=512,
    doc="https URL",
)
VERSION = Str(
    "a version such as 1.18.0 or 2.17.6 (digits and dots, optional -suffix)",
    r"[0-9]+(?:\.[0-9]+)*(?:[-+.][0-9A-Za-z]+)*",
    max_len=64,
    doc="version",
)
SHA256 = Str("64 lowercase hex digits (sha256)", r"[0-9a-f]{64}", doc="sha256 (64 hex digits)")
GIT_COMMIT = Str(
    "a git commit: 12 to 40 lowercase hex digits", r"[0-9a-f]{12,40}", doc="git commit (12-40 hex digits)"
)
DEB_PACKAGE = Str(
    "a Debian package name [a-z0-9][a-z0-9+.-]+", r"[a-z0-9][a-z0-9+.-]+", max_len=100, doc="Debian package"
)
# Exact pins only: an image is rebuilt from the same spec months later and must come out the same.
PIP_REQUIREMENT = Str(
    "an exact pin NAME==VERSION or NAME[extra,...]==VERSION (e.g. torch==2.13.0)",
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*\])?"
    r"==[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?(?:\+[A-Za-z0-9.]+)?",
    max_len=200,
    doc="exact pin",
)
# A base image for `podman build`: fully qualified (registry host first: no short-name guessing) and
# with a tag or digest (no :latest). Not an EDF `image` (edf.fields.EDF_IMAGE_REF, REGISTRY#IMAGE).
BASE_IMAGE_REF = Str(
    "a fully qualified image reference REGISTRY/PATH:TAG or REGISTRY/PATH@sha256:DIGEST "
    "(e.g. nvcr.io/nvidia/pytorch:25.06-py3)",
    r"(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::[0-9]{1,5})?"
    rf"(?:/{IMAGE_PATH_COMPONENT})+(?::{IMAGE_TAG}|@{IMAGE_DIGEST})",
    max_len=256,
    doc="image reference",
)
TEXT = Str("text without control, format or line-separator characters", max_len=4096, empty=True, doc="text")
LINE = Str(
    "one line of text (no control characters), 1 to 200 characters",
    max_len=200,
    doc="one line of text, 1-200 characters",
)


def _edf_literal(value: str) -> str | None:
    # EDF expands ${VAR} and reads $${VAR} as a literal; rendering turns "${" into "$${", which is
    # only unambiguous when the value holds no "$$" of its own.
    return "must not contain '$$' (EDF's escape sequence)" if "$$" in value else None


# Not empty: an empty value in an EDF's [env] unsets the variable, in a Containerfile it sets "".
LITERAL = Str(
    "non-empty text without control characters and without '$$' (used literally: no ${VAR} expansion)",
    check=_edf_literal,
    max_len=4096,
    doc="literal value",
)
LABEL_KEY = Str(
    "a label key in reverse-DNS form [a-z0-9]+([._-][a-z0-9]+)*", NAME_RE, max_len=128, doc="reverse-DNS key"
)
ANNOTATION_KEY = Str(
    "a dotted annotation key such as com.hooks.ssh.enabled ([a-z0-9_-] parts)",
    r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+",
    max_len=128,
    doc="dotted key",
)


class _VariablesAsPaths(dict):
    """Every ${VAR} defined, as an absolute path: the Container Engine expands it when the job starts
    (`cordee edf check` of the installed EDF sees its value); here it stands for what a mount
    variable such as ${SCRATCH} holds."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> str:
        return f"/{name}"


def _mount(value: str) -> str | None:
    """The EDF's own mount grammar (edf.fields.mount_syntax), after EDF's ${VAR} expansion."""
    expanded = expand(value, _VariablesAsPaths())
    _, problems = mount_syntax(expanded.value)
    errors = [*expanded.errors, *(message for severity, message in problems if severity == "error")]
    return "; ".join(errors) or None


def _edf_expandable(value: str) -> str | None:
    """What `cordee edf check` would refuse in the installed EDF whatever the host defines: a '${'
    that is not a ${NAME} or ${NAME:-} reference (render must not write what check rejects)."""
    return "; ".join(expand(value, _VariablesAsPaths()).errors) or None


EDF_TEXT = Str(
    "text without control characters, its ${VAR} references well formed (EDF expands them; "
    "$${VAR} is a literal ${VAR})",
    check=_edf_expandable,
    max_len=4096,
    empty=True,
    doc="text (EDF `${VAR}` expanded)",
)
MOUNT = Str(
    "SRC[:DST[:FLAGS]] as in an EDF (e.g. /capstor or ${SCRATCH}/d.sqsh:/data:sqsh)",
    check=_mount,
    doc="mount `SRC[:DST[:FLAGS]]`",
)

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
    doc="Spack spec",
)
SPACK_VARIANT = Str(
    "a Spack variant: +name, ~name or key=value",
    r"[+~][a-z0-9_]+|[a-z0-9_]+=[A-Za-z0-9._,:+-]+",
    doc="Spack variant",
)
GCC_SPEC = Str(
    "gcc@MAJOR[.MINOR[.PATCH]] with one-digit minor and patch (stackinator 4)",
    r"gcc@[0-9]{1,2}(?:\.[0-9](?:\.[0-9])?)?",
    doc="`gcc@N[.N[.N]]`",
)
GIT_REF = Str(
    "a git branch, tag or commit ([A-Za-z0-9._/-])",
    r"[A-Za-z0-9][A-Za-z0-9._/-]*",
    max_len=128,
    doc="git branch, tag or commit",
)
