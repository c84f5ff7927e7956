"""Render a validated image spec into a build folder: Containerfile, EDF and build plan for a
container spec, a stackinator (v1) recipe for a uenv spec.

One Jinja2 Environment configuration (StrictUndefined: a missing value is an error, never an
empty string), templates under recipes/, quoting only through the filters of images/quoting.py.
Rendering is deterministic: the same spec, templates, profile and cordee give the same bytes.
build.json is the contract with the build driver (images/README.md, "Build plan").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

from cordee import __version__
from cordee.errors import InputError, shown
from cordee.fileio import read_bounded, write_atomic
from cordee.images.containerfile import CONTAINERFILE, SCRIPTS, container_files, uses_scripts
from cordee.images.quoting import QuotingError, edf_literal
from cordee.images.spec import ImageSpec, SpecError, canonical_json
from cordee.images.templating import (
    header,
    literal_env,
    read_recipe,
    recipes_dir,
    referenced_templates,
    render_template,
)
from cordee.images.uenvrecipe import PACKAGE_PY, UENV_TEMPLATES, uenv_files

EDF_TEMPLATE = "edf/edf.toml.j2"
PLAN_SCHEMA = "cordee.buildplan/1"


class Rendered(NamedTuple):
    out_dir: Path
    files: list[str]  # relative to out_dir, sorted
    spec_hash: str
    content_key: str  # build cache key
    plan: dict  # = build.json


def render_edf(spec: ImageSpec, sqsh_path: Path) -> str:
    """EDF TOML text of a container spec; image = the absolute path of its squashfs."""
    if spec.kind != "container":
        raise SpecError(f"{spec.path}: {spec.name} is a uenv spec; only container specs have an EDF")
    image = os.path.abspath(os.fspath(sqsh_path))
    try:
        edf_literal(image)
    except QuotingError as e:
        raise InputError(f"squashfs path {image!r} cannot be written into an EDF: {e}") from None
    data, net = spec.data, spec.data["network"]
    annotations = dict(data["edf"]["annotations"])
    if net["stack"] == "hook":
        annotations["com.hooks.aws_ofi_nccl.enabled"] = "true"
        annotations["com.hooks.aws_ofi_nccl.variant"] = net["variant"]
    if net["cxi_hook"]:
        annotations["com.hooks.cxi.enabled"] = "true"
    context = {
        **header(spec),
        "image": image,
        "workdir": data["edf"]["workdir"],
        "entrypoint": data["edf"]["entrypoint"],
        "writable": data["edf"]["writable"],
        "mounts": data["edf"]["mounts"],
        "literal_env": literal_env(spec),
        "edf_env": sorted(data["edf"]["env"].items()),
        "annotations": sorted(annotations.items()),
    }
    return render_template(spec, EDF_TEMPLATE, context)


def _recipe_files(spec: ImageSpec) -> dict[str, bytes]:
    """Every file under recipes/ this spec's rendering reads (templates, scripts, package.py), by
    path relative to recipes/."""
    recipes = recipes_dir(spec)
    names = [CONTAINERFILE, EDF_TEMPLATE] if spec.kind == "container" else [*UENV_TEMPLATES.values()]
    files: dict[str, bytes] = {}
    while names:
        name = names.pop()
        if name not in files:
            files[name] = read_recipe(recipes, name)
            names.extend(referenced_templates(recipes, name, files[name]))
    if spec.kind == "uenv":
        extra = [PACKAGE_PY]
    elif uses_scripts(spec.data):
        extra = [p.relative_to(recipes).as_posix() for p in (recipes / SCRIPTS).glob("*.sh")]
    else:
        extra = []
    for rel in extra:
        files[rel] = read_recipe(recipes, rel)
    return files


def _installs_cordee(spec: ImageSpec) -> bool:
    return spec.kind == "uenv" or spec.data["python"]["install_cordee"]


def content_key(spec: ImageSpec) -> str:
    """The build cache key: spec, every recipe file used, cordee's version, the fabric profile's
    values and, where the image installs cordee, cordee's own source files."""
    from cordee.images.sources import source_files

    digest = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "big") + data)

    feed("format", b"cordee.content-key/1")
    feed("spec", spec.spec_hash.encode())
    feed("cordee", __version__.encode())
    feed("profile", canonical_json(spec.profile_env))
    for rel, data in sorted(_recipe_files(spec).items()):
        feed(f"recipes/{rel}", data)
    if _installs_cordee(spec):
        for rel, path in source_files():
            feed(f"cordee/{rel}", path.read_bytes())
    return digest.hexdigest()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Atomic write; an unchanged file is left alone (mtime too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data)


def _owned_path(out_dir: Path, rel: str) -> Path | None:
    """out_dir/rel if every directory on the way is a real directory inside out_dir, else None: a
    render writes and deletes only in its own folder, never through a symlink out of it."""
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        return None
    path = out_dir / rel
    return path if path.parent.resolve() == out_dir.resolve() / Path(rel).parent else None


def _previous_files(out_dir: Path, name: str) -> list[str]:
    """The files an earlier render of the same image wrote, from its build.json; anything else (no
    plan, another image's, not ours) claims nothing, so nothing is deleted on its word."""
    try:
        plan = json.loads(read_bounded(out_dir / "build.json"))
    except (InputError, ValueError):
        return []
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA or plan.get("name") != name:
        return []
    files = plan.get("files")
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def render_image(spec: ImageSpec, out_dir: Path, *, sqsh_path: Path | None = None) -> Rendered:
    """Render `spec` into out_dir (each file atomically) and return what was written."""
    out_dir = Path(out_dir)
    sqsh = (
        Path(os.path.abspath(sqsh_path)) if sqsh_path is not None else out_dir.resolve() / f"{spec.name}.sqsh"
    )
    key = content_key(spec)
    if spec.kind == "container":
        files, extra = container_files(spec, key)
        files[f"{spec.name}.toml"] = render_edf(spec, sqsh).encode()
    else:
        files, extra = uenv_files(spec)
    names = sorted([*files, "build.json"])
    plan = {
        "schema": PLAN_SCHEMA,
        "name": spec.name,
        "kind": spec.kind,
        "content_key": key,
        "spec_hash": spec.spec_hash,
        "sqsh": str(sqsh),
        **extra,
        "files": names,
    }
    stale = set(_previous_files(out_dir, spec.name)) - set(names)
    files["build.json"] = (json.dumps(plan, indent=2, sort_keys=True) + "\n").encode()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for rel, data in files.items():  # build.json last: it names what was written
            path = _owned_path(out_dir, rel)
            if path is None:
                raise InputError(
                    f"{out_dir / rel}: refusing to write through a symbolic link out of {out_dir}"
                )
            _write_if_changed(path, data)
        for rel in sorted(stale):  # left over from an earlier render; a claim outside is ignored
            path = _owned_path(out_dir, rel)
            if path is not None and (path.is_file() or path.is_symlink()):
                path.unlink()
    except OSError as e:
        where = e.filename or out_dir
        raise InputError(f"cannot write the render into {shown(str(where))}: {e.strerror or e}") from None
    return Rendered(out_dir, names, spec.spec_hash, key, plan)
