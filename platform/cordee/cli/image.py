"""`cordee image list | validate NAME | render NAME [--out DIR] | --all | build NAME [--force]`:
the image specs in images/ (cordee.images.spec), rendered to build/NAME/ (cordee.images.render)
and built with podman into a .sqsh plus an EDF (cordee.images.build)."""

from __future__ import annotations

import json
import sys

import click

from cordee.cli import VERBS
from cordee.cli.options import json_option, verb_group


@verb_group("image", VERBS["image"].help)
def command() -> None:
    pass


def _names(names: tuple[str, ...], all_: bool, root) -> list[str]:
    from cordee.errors import InputError
    from cordee.images.spec import list_specs

    if all_ and names:
        raise InputError("give NAMEs or --all, not both")
    if all_:
        return list_specs(root)
    if not names:
        raise InputError("no spec named (give NAME, or --all; cordee image list shows them)")
    return list(names)


LIST_HELP = "List the specs in images/ with their kind; invalid ones are marked."


@command.command("list", help=LIST_HELP, short_help=LIST_HELP)
@json_option("cordee.imagelist/1")
def list_images(as_json: bool) -> int:
    from cordee.errors import CordeeError
    from cordee.images.spec import find_root, list_specs, load_spec

    root = find_root()
    rows = []
    for name in list_specs(root):
        try:
            spec = load_spec(name, root)
            rows.append(
                {"name": spec.name, "kind": spec.kind, "path": str(spec.path), "spec_hash": spec.spec_hash}
            )
        except CordeeError as e:
            rows.append({"name": name, "kind": None, "path": None, "spec_hash": None, "error": str(e)})
    bad = [r for r in rows if r.get("error")]
    if as_json:
        print(json.dumps({"schema": "cordee.imagelist/1", "root": str(root), "images": rows}, indent=2))
    else:
        width = max([len(r["name"]) for r in rows] + [4])
        print(f"{'NAME'.ljust(width)}  KIND       SPEC")
        for r in rows:
            what = f"INVALID: {r['error']}" if r.get("error") else r["path"]
            print(f"{r['name'].ljust(width)}  {(r['kind'] or '-').ljust(9)}  {what}")
    for r in bad:
        print(f"cordee: error: {r['error']}", file=sys.stderr)
    return 2 if bad else 0


VALIDATE_HELP = "Validate specs; errors name file, field and what is allowed."


@command.command("validate", help=f"{VALIDATE_HELP} NAME: a spec name or path.", short_help=VALIDATE_HELP)
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="validate every spec in images/")
def validate(names: tuple[str, ...], all_: bool) -> int:
    from cordee.errors import one_line
    from cordee.images.spec import SpecError, find_root, load_spec

    root = find_root()
    for name in _names(names, all_, root):
        try:
            spec = load_spec(name, root)
        except SpecError as e:  # every error of the spec, one line each naming file, field, what is allowed
            print("\n".join(one_line(f"cordee: error: {line}") for line in e.lines), file=sys.stderr)
            return e.exit_code
        print(f"{spec.name}: valid ({spec.kind}, {spec.path}, spec hash {spec.spec_hash[:12]})")
    return 0


RENDER_HELP = "Render a spec (Containerfile, EDF, uenv recipe) without building."


@command.command("render", help=RENDER_HELP, short_help=RENDER_HELP)
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="render every spec, each into build/NAME/")
@click.option("--out", metavar="DIR", help="output directory (default build/NAME/; one NAME only)")
def render(names: tuple[str, ...], all_: bool, out: str | None) -> int:
    from pathlib import Path

    from cordee.errors import InputError
    from cordee.images.render import render_image
    from cordee.images.spec import find_root, load_spec

    root = find_root()
    names = _names(names, all_, root)
    if out and len(names) != 1:
        raise InputError("--out takes one NAME (with --all each spec goes to build/NAME/)")
    for name in names:
        spec = load_spec(name, root)
        into = Path(out).resolve() if out else root / "build" / spec.name
        rendered = render_image(spec, into)
        key = rendered.content_key[:12]
        print(f"{spec.name}: rendered {len(rendered.files)} files into {into} (content key {key})")
    return 0


@command.command(
    "build",
    short_help="Build NAME: render, podman build, squashfs export, install the EDF in $EDF_PATH.",
    help="Render build/NAME/, build the podman image (offline: --network=none), export "
    "build/NAME/NAME.sqsh and install NAME.toml into the first directory of $EDF_PATH (default "
    "~/.edf). Unchanged spec and templates are a cache hit. Full log: build/NAME/build.log.",
)
@click.argument("name", metavar="NAME")
@click.option("--force", is_flag=True, help="rebuild even when the cache is valid")
@click.option(
    "--mirror",
    metavar="URL",
    help="Debian mirror for debootstrap bases (default: $CORDEE_DEBIAN_MIRROR, else this host's apt source)",
)
@json_option("cordee.imagebuild/1")
def build(name: str, force: bool, mirror: str | None, as_json: bool) -> int:
    from cordee.images.build import build_image

    summary = build_image(name, force=force, mirror=mirror)
    if as_json:
        print(json.dumps(summary, indent=2))
    elif summary.get("kind") == "container":
        state = "cache hit" if summary["cache_hit"] else f"built in {summary['seconds']:.0f}s"
        print(f"{summary['name']}: {state}: {summary['tag']} -> {summary['sqsh']}; EDF {summary['edf']}")
    return 0
