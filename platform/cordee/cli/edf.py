"""`cordee edf check | render | run`: Environment Definition Files of the CSCS Container Engine.

check: every problem of an EDF and of its bases (cordee.edf.load), exit 0 ok, 1 warnings, 2 errors.
render: the EDF of an image spec (cordee.images.render), printed or written atomically.
run: the EDF run locally through podman (cordee.edf.run), to try an environment before queuing.
"""

from __future__ import annotations

import os
import sys

import click

from cordee.cli.options import EndsInCommand, Seconds, json_option, verb_group

SCHEMA = "cordee.edfcheck/1"
LONGEST_RUN_S = 7 * 24 * 3600  # a local trial of an environment; poll() itself stops at 24.8 days


@verb_group(
    "edf",
    "Environment Definition Files (EDF, TOML) of the CSCS Container Engine: "
    "srun --environment=NAME. A NAME is looked up as NAME.toml in each directory of $EDF_PATH "
    "(colon separated, default ~/.edf); a value with '/' or ending in .toml is a path.",
)
def command() -> None:
    pass


@command.command(
    "check",
    short_help="Check an EDF and its base_environment chain.",
    help="Checks TOML syntax, keys and types, mounts (SRC:DST[:FLAGS], flags joined by '+'), "
    "${VAR} expansion against this environment, base_environment inheritance (10 levels, cycles) "
    "and annotations. Prints FILE: FIELD: severity: message per problem. Exit 0 ok, 1 warnings "
    "only, 2 errors.",
)
@click.argument("edf", metavar="FILE_OR_NAME")
@json_option(SCHEMA)
def check(edf: str, as_json: bool) -> int:
    from cordee.edf.load import check_edf, edf_as_dict

    report = check_edf(edf, os.environ)
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = len(report.findings) - errors
    if as_json:
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


@command.command(
    "render",
    short_help="Render the EDF of image spec NAME.",
    help="Renders images/NAME.yaml's EDF with image = the absolute squashfs path.",
)
@click.argument("name", metavar="NAME")
@click.option("--sqsh", metavar="PATH", help="squashfs image path (default: <root>/build/NAME/NAME.sqsh)")
@click.option("--out", metavar="FILE", help="write the EDF to FILE (atomically) instead of stdout")
def render(name: str, sqsh: str | None, out: str | None) -> int:
    from pathlib import Path

    from cordee.errors import InputError
    from cordee.fileio import write_atomic
    from cordee.images.render import render_edf
    from cordee.images.spec import find_root, load_spec

    spec = load_spec(name)  # a spec given as a path needs no checkout when --sqsh is given
    image = Path(os.path.abspath(sqsh)) if sqsh else find_root() / "build" / spec.name / f"{spec.name}.sqsh"
    text = render_edf(spec, image)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomic(Path(out), text)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write there: {e.strerror}") from None
    print(f"cordee: wrote {out}", file=sys.stderr)
    return 0


@command.command(
    "run",
    cls=EndsInCommand,
    short_help="Run CMD in an EDF's environment locally through podman.",
    help="Resolves the EDF (as check does; errors stop here), then runs CMD in its image "
    "with its mounts, env, workdir, writable and entrypoint settings. Exit code: CMD's.",
)
@click.option(
    "--timeout",
    type=Seconds(most=LONGEST_RUN_S),
    metavar="S",
    help="stop CMD after S seconds (default: none)",
)
@click.option(
    "--no-host-env",
    is_flag=True,
    help="start from the image's environment only (CE, like a Slurm task, passes the host's)",
)
@click.argument("edf", metavar="NAME_OR_FILE")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD ...")
def run(timeout: float | None, no_host_env: bool, edf: str, cmd: list[str]) -> int:
    if not cmd:
        raise click.UsageError("missing CMD (cordee edf run NAME_OR_FILE -- CMD ...)")

    from cordee.edf.load import load_edf
    from cordee.edf.run import run_edf

    resolved = load_edf(edf, os.environ)
    return run_edf(resolved, cmd, environ=os.environ, timeout=timeout, host_env=not no_host_env)
