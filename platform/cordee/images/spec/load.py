"""Image specs: find them, load them (YAML via safe_load), validate them completely before anything
is rendered, and hash them.

A spec is `images/NAME.yaml` in a cordee checkout (the folder that also holds `recipes/`). A spec
that cannot be rendered is one SpecError (exit 2) with every error found in one run, one line each
naming the file, the field path and what is allowed. Rules between sections (rules.py) run once
every field is valid on its own: they read the values the field checks vouch for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from cordee.errors import InputError, one_line, shown
from cordee.fileio import ReadError, read_bounded
from cordee.images.spec.fields import Collector, Invalid
from cordee.images.spec.grammars import NAME_RE
from cordee.images.spec.rules import check_cross_fields
from cordee.images.spec.schema import CONTAINER, SOURCES, UENV_SPEC

_NAME = re.compile(NAME_RE)
_PACKAGE_ROOT = Path(__file__).resolve().parents[4]  # platform/cordee/images/spec -> checkout root
_MAX_BYTES = 1 << 20


class SpecError(InputError):
    """A spec that cannot be rendered: `lines` holds one line per error, each naming the file, the
    field and what is allowed. str() is one line, the first error and how many more: every verb
    keeps the one-line contract; `cordee image validate` prints all of `lines`."""

    def __init__(self, *lines: str) -> None:
        more = f" (and {len(lines) - 1} more: `cordee image validate` lists them all)" if lines[1:] else ""
        super().__init__(f"{lines[0] if lines else 'invalid spec'}{more}")
        self.lines = list(lines)


class ImageSpec(NamedTuple):
    name: str
    path: Path
    kind: str  # "container" | "uenv"
    data: dict  # validated, defaults filled; treat as read-only
    spec_hash: str  # sha256 hex of canonical_json(data)
    profile_env: dict[str, str]  # the fabric profile's variables, read once here; treat as read-only


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _is_root(path: Path) -> bool:
    # os.path, not Path.is_dir: Python 3.11's pathlib raises on a name longer than NAME_MAX
    return os.path.isdir(path / "images") and os.path.isdir(path / "recipes")


def find_root(start: Path | None = None) -> Path:
    """The folder holding images/ and recipes/: $CORDEE_ROOT, else the nearest one above `start`
    (default: the working directory), else the checkout this package runs from."""
    env = os.environ.get("CORDEE_ROOT")
    if env:
        root = Path(env).expanduser()
        if not _is_root(root):
            raise InputError(f"CORDEE_ROOT={shown(env)}: no images/ and recipes/ folders there")
        return root.resolve()
    here = Path(start if start is not None else os.getcwd()).resolve()
    for candidate in (here, *here.parents, _PACKAGE_ROOT):
        if _is_root(candidate):
            return candidate
    raise InputError(
        f"no cordee checkout (a folder with images/ and recipes/) above {here} or at {_PACKAGE_ROOT}; "
        "set CORDEE_ROOT to one"
    )


def list_specs(root: Path) -> list[str]:
    """Names of the specs in root/images (NAME.yaml), sorted."""
    folder = Path(root) / "images"
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file() and _NAME.fullmatch(p.stem))


def _read_yaml(path: Path) -> Any:
    import yaml  # deferred: only `cordee image`/`edf render` need PyYAML

    try:
        raw = read_bounded(path, limit=_MAX_BYTES)  # a FIFO or /dev/zero as a spec: refused, not read
    except ReadError as e:
        raise SpecError(f"{path}: {e.reason}") from None
    try:
        text = raw.decode("utf-8")
        # What yaml.safe_load does (same SafeLoader), with the node tree checked before it is built:
        # one parse instead of compose() for the check and safe_load() for the values.
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:  # an empty document
                return None
            _check_nodes(node, path)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except ValueError as e:  # PyYAML's int() of a plain scalar of more than 4,300 digits
        raise SpecError(f"{path}: a YAML value cordee cannot read: {one_line(str(e))[:120]}") from None
    except RecursionError:  # PyYAML composes and constructs recursively
        raise SpecError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}:{where}: not valid YAML: {problem}") from None


def _check_nodes(node: Any, path: Path) -> None:
    """Before anything is built: no key twice in one mapping (safe_load keeps the last silently; a
    spec must not say two things), and no anchors or aliases. A spec is plain values, and an alias
    is a reference: a 1 KB "billion laughs" of nested aliases expands exponentially in every walk
    of the data (duplicate check, validation, hashing), so a node reached twice is refused."""
    import yaml

    seen_nodes: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:
            line = current.start_mark.line + 1
            raise SpecError(f"{path}: line {line}: YAML anchors and aliases are not allowed in a spec")
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        line = key.start_mark.line + 1
                        raise SpecError(
                            f"{path}: line {line}: key {shown(key.value)} appears twice in one mapping"
                        )
                    keys.add(key.value)
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _resolve_path(name_or_path: str, root: Path | None) -> tuple[str, Path]:
    looks_like_path = (
        name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or os.sep in name_or_path
    )
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        name = path.name.rsplit(".", 1)[0]
    else:
        root = find_root() if root is None else Path(root)
        name, path = name_or_path, root / "images" / f"{name_or_path}.yaml"
        if not os.path.isfile(path):
            known = ", ".join(list_specs(root)) or "(none)"
            raise SpecError(f"unknown image spec {shown(name_or_path)} (no {path}); known specs: {known}")
    if not _NAME.fullmatch(name) or len(name) > 64:
        raise SpecError(
            f"{shown(str(path))}: spec name {shown(name)} (the file name) must be lowercase letters and "
            "digits, parts joined by single '.', '_' or '-' (it becomes a podman image name), "
            "at most 64 characters"
        )
    return name, path


def _sources(data: dict, spec_path: Path) -> list[str]:
    """Merge sources_file (a YAML mapping, relative to the spec) under the inline sources; -> the
    error lines, each naming the file it is about."""
    rel = data["sources_file"]
    if rel is None:
        return []
    file = spec_path.parent / rel
    if not os.path.isfile(file):
        return [f"{spec_path}: field 'sources_file': {shown(str(file))} does not exist"]
    try:
        from_file = SOURCES.check(_read_yaml(file), "")
    except SpecError as e:
        return e.lines
    except Invalid as e:
        return [f"{file}: {problem.message()}" for problem in e.problems]
    data["sources"] = dict(sorted({**from_file, **data["sources"]}.items()))
    return []


def _kind(raw: Any) -> str:
    """The spec's kind, which chooses its schema: without one no other field can be checked."""
    if not isinstance(raw, dict):
        raise Invalid("(top level)", "must be a mapping of fields", "kind, description, fabric_profile, ...")
    kind = raw.get("kind")
    if kind not in ("container", "uenv"):
        raise Invalid(
            "kind", f"{kind!r} is not allowed" if "kind" in raw else "is required", "container, uenv"
        )
    return kind


def _profile_env(raw: dict, errors: Collector) -> dict[str, str] | None:
    """The fabric profile's variables, or None when the name is missing, malformed (the schema
    says so) or unknown (said here): checked whatever the other fields hold."""
    from cordee import profiles

    name = raw.get("fabric_profile")
    if not isinstance(name, str) or any(p.path == "fabric_profile" for p in errors.problems):
        return None
    known = profiles.names()
    if name not in known:
        errors.add("fabric_profile", f"unknown profile {name!r}", ", ".join(known))
        return None
    return profiles.load(name).as_env()


def load_spec(name_or_path: str, root: Path | None = None) -> ImageSpec:
    """Load and validate a spec by name (root/images/NAME.yaml) or by path to a .yaml file."""
    name, path = _resolve_path(name_or_path, root)
    raw = _read_yaml(path)
    try:
        kind = _kind(raw)
    except Invalid as e:
        raise SpecError(f"{path}: {e.problems[0].message()}") from None
    errors = Collector()
    data = errors.check(CONTAINER if kind == "container" else UENV_SPEC, raw, "")
    profile_env = _profile_env(raw, errors)
    other_files = _sources(data, path) if data is not None and kind == "container" else []
    if data is not None and profile_env is not None and not other_files:
        errors.call(check_cross_fields, data, profile_env, data["fabric_profile"])
    lines = [f"{path}: {problem.message()}" for problem in errors.problems] + other_files
    if lines:
        raise SpecError(*lines)
    spec_hash = hashlib.sha256(canonical_json(data)).hexdigest()
    return ImageSpec(name, path, kind, data, spec_hash, profile_env)
