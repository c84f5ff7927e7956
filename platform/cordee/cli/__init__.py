"""The `cordee` command.

argparse, not click: `cordee --help` and `cordee env show` run on login nodes and in every task,
and importing click alone costs more than twice Python's own start-up (bench_cli.py). The root
lists every verb explicitly; only the module of the verb being run is imported.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cordee import __version__
from cordee.errors import CordeeError

# verb -> (module with register(subparsers, name, help), one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "env": ("cordee.cli.env", "Show the detected launch environment; check it against a profile."),
    "hostlist": ("cordee.cli.hostlist", "Expand and compress Slurm hostlists."),
    "launch": ("cordee.cli.launch", "Set rank variables, fabric profile and binding, then exec CMD."),
    "image": ("cordee.cli.image", "List, validate, render and build container images from images/ specs."),
    "edf": ("cordee.cli.edf", "Render, check and locally run Environment Definition Files (EDF)."),
    "net": ("cordee.cli.net", "Show NCCL, the NCCL net plugin and its NICs, libfabric providers."),
}


class UsageError(CordeeError):
    """Bad command line: exit 2 with one line."""


class Formatter(argparse.HelpFormatter):
    """argparse's own formatter imports shutil (3 ms) for the terminal width; os has it too."""

    def __init__(self, prog: str, **kwargs) -> None:
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError):
            columns = int(os.environ.get("COLUMNS", "0") or 0) or 80
        kwargs.setdefault("width", max(columns - 2, 40))
        super().__init__(prog, **kwargs)


class Parser(argparse.ArgumentParser):
    """argparse prints usage plus message on bad input; cordee's contract is one line, exit 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser(verb: str | None) -> Parser:
    parser = Parser(
        prog="cordee",
        description="cordee: launch, check and run distributed PyTorch on Slurm GPU supercomputers.",
    )
    parser.add_argument("--version", action="version", version=f"cordee {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True, parser_class=Parser)
    for name, (module, help_) in VERBS.items():
        if name == verb:
            importlib.import_module(module).register(sub, name, help_)
        else:  # listed in --help; its options are only known once it is chosen
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point: domain errors become one line on stderr and their exit code."""
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(verb if verb in VERBS else None).parse_args(argv)
        rc = args.run(args)
    except CordeeError as e:
        print(f"cordee: error: {e}" if not isinstance(e, UsageError) else f"{e}", file=sys.stderr)
        rc = e.exit_code
    except KeyboardInterrupt:
        print("cordee: interrupted", file=sys.stderr)
        rc = 130
    except BrokenPipeError:  # `cordee hostlist expand ... | head`
        sys.stderr.close()
        rc = 0
    sys.exit(rc or 0)


def add_json_flag(parser: argparse.ArgumentParser, schema: str) -> None:
    parser.add_argument("--json", dest="as_json", action="store_true", help=f"Print JSON (schema {schema}).")
