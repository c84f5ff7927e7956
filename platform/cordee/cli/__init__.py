"""The `cordee` command. The root group lists every verb explicitly; each verb's module is
imported only when that verb runs, so `cordee --help` stays fast on a login node."""

from __future__ import annotations

import importlib
import sys

import click

from cordee import __version__
from cordee.errors import CordeeError

# verb -> (module, attribute, one-line help shown by `cordee --help` without importing the module)
VERBS: dict[str, tuple[str, str, str]] = {
    "env": ("cordee.cli.env", "env", "Show the detected launch environment; check it against a profile."),
    "hostlist": ("cordee.cli.hostlist", "hostlist", "Expand and compress Slurm hostlists."),
    "launch": (
        "cordee.cli.launch",
        "launch",
        "Set rank variables, fabric profile and binding, then exec CMD.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in VERBS:
            return None
        module, attr, _ = VERBS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, VERBS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cordee")
def cli() -> None:
    """cordee: launch, check and run distributed PyTorch on Slurm GPU supercomputers."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: domain errors become one line on stderr and their exit code."""
    try:
        rc = cli.main(args=argv, prog_name="cordee", standalone_mode=False)
    except click.exceptions.Exit as e:
        rc = e.exit_code
    except click.ClickException as e:
        e.show()
        rc = e.exit_code
    except click.exceptions.Abort:
        click.echo("cordee: aborted", err=True)
        rc = 130
    except CordeeError as e:
        click.echo(f"cordee: error: {e}", err=True)
        rc = e.exit_code
    sys.exit(rc or 0)
