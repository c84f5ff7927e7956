"""`cordee edf check | render | run`: Environment Definition Files of the CSCS Container Engine.

check: every problem of an EDF and of its bases (cordee.edf.load), exit 0 ok, 1 warnings, 2 errors.
render: the EDF of an image spec (cordee.images.render), printed or written atomically.
run: the EDF run locally through podman (cordee.edf.run), to try an environment before queuing.
"""

from __future__ import annotations

import argparse
import os
import sys

from cordee.cli import add_json_flag

SCHEMA = "cordee.edfcheck/1"


def register(sub, name: str, help_: str) -> None:
    parser = sub.add_parser(
        name,
        help=help_,
        description="Environment Definition Files (EDF, TOML) of the CSCS Container Engine: "
        "srun --environment=NAME. A NAME is looked up as NAME.toml in each directory of $EDF_PATH "
        "(colon separated, default ~/.edf); a value with '/' or ending in .toml is a path.",
    )
    verbs = parser.add_subparsers(
        dest="edf_verb", metavar="COMMAND", required=True, parser_class=type(parser)
    )
    check = verbs.add_parser(
        "check",
        help="Check an EDF and its base_environment chain.",
        description="Checks TOML syntax, keys and types, mounts (SRC:DST[:FLAGS], flags joined by '+'), "
        "${VAR} expansion against this environment, base_environment inheritance (10 levels, cycles) "
        "and annotations. Prints FILE: FIELD: severity: message per problem. Exit 0 ok, 1 warnings "
        "only, 2 errors.",
    )
    check.add_argument("edf", metavar="FILE_OR_NAME")
    add_json_flag(check, SCHEMA)
    check.set_defaults(run=run_check)
    render = verbs.add_parser(
        "render",
        help="Render the EDF of image spec NAME.",
        description="Renders images/NAME.yaml's EDF with image = the absolute squashfs path.",
    )
    render.add_argument("name", metavar="NAME")
    render.add_argument(
        "--sqsh", metavar="PATH", help="squashfs image path (default: <root>/build/NAME/NAME.sqsh)"
    )
    render.add_argument("--out", metavar="FILE", help="write the EDF to FILE (atomically) instead of stdout")
    render.set_defaults(run=run_render)
    run = verbs.add_parser(
        "run",
        help="Run CMD in an EDF's environment locally through podman.",
        description="Resolves the EDF (as check does; errors stop here), then runs CMD in its image "
        "with its mounts, env, workdir, writable and entrypoint settings. Exit code: CMD's.",
        usage="cordee edf run [-h] [--timeout S] [--no-host-env] NAME_OR_FILE -- CMD ...",
    )
    _add_run_options(run)
    run.add_argument("edf", metavar="NAME_OR_FILE")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command, after '--'")
    run.set_defaults(run=run_run)


def _add_run_options(parser) -> None:
    """The options of `edf run`: before NAME_OR_FILE (register) or between it and '--' (run_run)."""
    parser.add_argument("--timeout", type=float, metavar="S", help="stop CMD after S seconds (default: none)")
    parser.add_argument(
        "--no-host-env",
        dest="host_env",
        action="store_false",
        help="start from the image's environment only (CE, like a Slurm task, passes the host's)",
    )


def run_check(args) -> int:
    from cordee.edf.load import check_edf, edf_as_dict

    report = check_edf(args.edf, os.environ)
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = len(report.findings) - errors
    if args.as_json:
        import json

        doc = {
            "schema": SCHEMA,
            "path": report.path,
            "ok": report.ok,
            "errors": errors,
            "warnings": warnings,
            "findings": [f._asdict() for f in report.findings],
            "edf": edf_as_dict(report.edf) if report.edf is not None else None,
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        lines = [f"{f.file}: {f.field}: {f.severity}: {f.message}" for f in report.findings]
        verdict = "ok" if not report.findings else f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
        chain = (
            f" (inherits {len(report.edf.chain) - 1} files)"
            if report.edf and len(report.edf.chain) > 1
            else ""
        )
        sys.stdout.write("\n".join([*lines, f"{report.path}: {verdict}{chain}"]) + "\n")
    return 2 if errors else 1 if warnings else 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run_render(args) -> int:
    from pathlib import Path

    from cordee.errors import InputError
    from cordee.fileio import write_atomic
    from cordee.images.render import render_edf
    from cordee.images.spec import find_root, load_spec

    spec = load_spec(args.name)  # a spec given as a path needs no checkout when --sqsh is given
    sqsh = (
        Path(os.path.abspath(args.sqsh))
        if args.sqsh
        else find_root() / "build" / spec.name / f"{spec.name}.sqsh"
    )
    text = render_edf(spec, sqsh)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomic(Path(args.out), text)
    except OSError as e:
        raise InputError(f"--out {args.out}: cannot write there: {e.strerror}") from None
    print(f"cordee: wrote {args.out}", file=sys.stderr)
    return 0


def run_run(args) -> int:
    from cordee.cli import Parser, UsageError

    # argparse's REMAINDER keeps what follows NAME_OR_FILE, with or without the '--' (it depends
    # on the Python version); options written between NAME_OR_FILE and '--' are parsed here.
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    elif cmd and cmd[0].startswith("-") and "--" in cmd:
        split = cmd.index("--")
        extra = Parser(prog="cordee edf run", add_help=False)
        _add_run_options(extra)
        ns = argparse.Namespace(timeout=args.timeout, host_env=args.host_env)
        ns = extra.parse_args(cmd[:split], ns)
        args.timeout, args.host_env = ns.timeout, ns.host_env
        cmd = cmd[split + 1 :]
    if not cmd:
        raise UsageError("cordee edf run: missing CMD (cordee edf run NAME_OR_FILE -- CMD ...)")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("cordee edf run: --timeout must be a positive number of seconds")

    from cordee.edf.load import load_edf
    from cordee.edf.run import run_edf

    edf = load_edf(args.edf, os.environ)
    return run_edf(edf, cmd, environ=os.environ, timeout=args.timeout, host_env=args.host_env)
