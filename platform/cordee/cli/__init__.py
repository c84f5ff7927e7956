"""The `cordee` command (click).

The root lists every verb with its one-line help and imports only the module of the verb being
run: `cordee --help` and `cordee env show` run on login nodes and in every task of a job.
Whatever goes wrong ends as ONE line on stderr and an exit code, never click's usage block.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

import click
from click.exceptions import Exit

from cordee import __version__
from cordee.errors import CordeeError, one_line


class Verb(NamedTuple):
    module: str  # defines `command`, a click command or group named after the verb
    help: str


VERBS: dict[str, Verb] = {
    "env": Verb("cordee.cli.env", "Show the detected launch environment; check it against a profile."),
    "hostlist": Verb("cordee.cli.hostlist", "Expand and compress Slurm hostlists."),
    "launch": Verb("cordee.cli.launch", "Set rank variables, fabric profile and binding, then exec CMD."),
    "image": Verb(
        "cordee.cli.image", "List, validate, render and build container images from images/ specs."
    ),
    "edf": Verb("cordee.cli.edf", "Render, check and locally run Environment Definition Files (EDF)."),
    "net": Verb("cordee.cli.net", "Show NCCL, the NCCL net plugin and its NICs, libfabric providers."),
    "preflight": Verb(
        "cordee.cli.preflight", "Check GPUs, compute and the interconnect of a job; name bad nodes."
    ),
    "bench": Verb("cordee.cli.bench", "Benchmark collectives, GEMM and device memory (preflight's engines)."),
    "train": Verb("cordee.cli.train", "Train the reference decoder-only transformer (FSDP2, checkpoints)."),
    "data": Verb("cordee.cli.data", "Token shards, chat data for `cordee train`; squashfs dataset images."),
    "job": Verb("cordee.cli.job", "Render sbatch scripts for chained, resumable training jobs."),
    "export": Verb("cordee.cli.export", "Export a training checkpoint as a Hugging Face model directory."),
    "io": Verb("cordee.cli.io", "Benchmark a filesystem: metadata, throughput, loader and checkpoint I/O."),
    "ckpt": Verb("cordee.cli.ckpt", "Checkpoint planning: the interval that loses least (Young/Daly)."),
}

COMPLETE_VAR = "_CORDEE_COMPLETE"  # click's completion: eval "$(_CORDEE_COMPLETE=bash_source cordee)"


class LazyVerbs(click.Group):
    """The root group: verbs come from VERBS; a verb's module is imported when it is resolved."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        verb = VERBS.get(name)
        return importlib.import_module(verb.module).command if verb else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own asks every command for its help, which would import every verb
        with formatter.section("Commands"):
            formatter.write_dl([(name, verb.help) for name, verb in VERBS.items()])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        verbs = [CompletionItem(n, help=v.help) for n, v in VERBS.items() if n.startswith(incomplete)]
        return verbs + click.Command.shell_complete(self, ctx, incomplete)


@click.group(
    cls=LazyVerbs,
    name="cordee",
    no_args_is_help=False,  # a bare `cordee` is a usage error (one line), as a bare `cordee env` is
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="cordee", message="%(prog)s %(version)s")
def root() -> None:
    """cordee: launch, check and run distributed PyTorch on Slurm GPU supercomputers."""


def usage_line(e: click.UsageError) -> str:
    """click's usage error as one line: the command, the message, where the help is."""
    path = e.ctx.command_path if e.ctx is not None else "cordee"
    message = " ".join(e.format_message().split()).removesuffix(".")
    return f"{path}: {message[:1].lower()}{message[1:]} (see {path} --help)"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage and domain errors become one line on stderr and their exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if COMPLETE_VAR in os.environ:
        root.main(args, prog_name="cordee")  # click prints the completion script or candidates, exits
    try:
        with root.make_context("cordee", args) as ctx:
            rc = root.invoke(ctx)
    except Exit as e:  # --help, --version
        rc = e.exit_code
    except click.UsageError as e:
        rc = _fail(usage_line(e), code=2)
    except click.ClickException as e:
        rc = _fail(f"cordee: error: {e.format_message()}", code=e.exit_code)
    except CordeeError as e:
        rc = _fail(f"cordee: error: {e}", code=e.exit_code)
    except KeyboardInterrupt:
        rc = _fail("cordee: interrupted", code=130)
    except BrokenPipeError:  # `cordee hostlist expand ... | head`
        sys.stderr.close()
        rc = 0
    sys.exit(rc or 0)


def _fail(line: str, code: int) -> int:
    """The message on stderr as one line (one_line escapes breaks in it); the exit code."""
    print(one_line(line), file=sys.stderr, flush=True)
    return code
