"""`cordee image list | validate NAME | render NAME [--out DIR] | --all | build NAME [--force]`:
the image specs in images/ (cordee.images.spec), rendered to build/NAME/ (cordee.images.render)
and built with podman into a .sqsh plus an EDF (cordee.images.build)."""

from __future__ import annotations

import json
import sys

from cordee.cli import add_json_flag


def register(sub, name: str, help_: str) -> None:
    parser = sub.add_parser(name, help=help_, description=help_)
    verbs = parser.add_subparsers(
        dest="image_verb", metavar="COMMAND", required=True, parser_class=type(parser)
    )
    list_ = verbs.add_parser(
        "list", help="List the specs in images/ with their kind; invalid ones are marked."
    )
    add_json_flag(list_, "cordee.imagelist/1")
    list_.set_defaults(run=run_list)

    validate = verbs.add_parser(
        "validate", help="Validate specs; errors name file, field and what is allowed."
    )
    validate.add_argument("names", metavar="NAME", nargs="*", help="spec name or path (default with --all)")
    validate.add_argument("--all", action="store_true", help="validate every spec in images/")
    validate.set_defaults(run=run_validate)

    render = verbs.add_parser(
        "render", help="Render a spec (Containerfile, EDF, uenv recipe) without building."
    )
    render.add_argument("names", metavar="NAME", nargs="*")
    render.add_argument("--all", action="store_true", help="render every spec, each into build/NAME/")
    render.add_argument("--out", metavar="DIR", help="output directory (default build/NAME/; one NAME only)")
    render.set_defaults(run=run_render)

    build = verbs.add_parser(
        "build",
        help="Build NAME: render, podman build, squashfs export, install the EDF in $EDF_PATH.",
        description="Render build/NAME/, build the podman image (offline: --network=none), export "
        "build/NAME/NAME.sqsh and install NAME.toml into the first directory of $EDF_PATH (default "
        "~/.edf). Unchanged spec and templates are a cache hit. Full log: build/NAME/build.log.",
    )
    build.add_argument("name", metavar="NAME")
    build.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    build.add_argument(
        "--mirror",
        metavar="URL",
        help="Debian mirror for debootstrap bases "
        "(default: $CORDEE_DEBIAN_MIRROR, else this host's apt source)",
    )
    add_json_flag(build, "cordee.imagebuild/1")
    build.set_defaults(run=run_build)


def _names(args, root) -> list[str]:
    from cordee.errors import InputError
    from cordee.images.spec import list_specs

    if args.all and args.names:
        raise InputError("give NAMEs or --all, not both")
    if args.all:
        return list_specs(root)
    if not args.names:
        raise InputError("no spec named (give NAME, or --all; cordee image list shows them)")
    return args.names


def run_list(args) -> int:
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
    if args.as_json:
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


def run_validate(args) -> int:
    from cordee.images.spec import find_root, load_spec

    root = find_root()
    for name in _names(args, root):
        spec = load_spec(name, root)  # SpecError: exit 2, one line naming file and field
        print(f"{spec.name}: valid ({spec.kind}, {spec.path}, spec hash {spec.spec_hash[:12]})")
    return 0


def run_render(args) -> int:
    from pathlib import Path

    from cordee.errors import InputError
    from cordee.images.render import render_image
    from cordee.images.spec import find_root, load_spec

    root = find_root()
    names = _names(args, root)
    if args.out and len(names) != 1:
        raise InputError("--out takes one NAME (with --all each spec goes to build/NAME/)")
    for name in names:
        spec = load_spec(name, root)
        out = Path(args.out).resolve() if args.out else root / "build" / spec.name
        rendered = render_image(spec, out)
        key = rendered.content_key[:12]
        print(f"{spec.name}: rendered {len(rendered.files)} files into {out} (content key {key})")
    return 0


def run_build(args) -> int:
    from cordee.images.build import build_image

    summary = build_image(args.name, force=args.force, mirror=args.mirror)
    if args.as_json:
        print(json.dumps(summary, indent=2))
    elif summary.get("kind") == "container":
        state = "cache hit" if summary["cache_hit"] else f"built in {summary['seconds']:.0f}s"
        print(f"{summary['name']}: {state}: {summary['tag']} -> {summary['sqsh']}; EDF {summary['edf']}")
    return 0
