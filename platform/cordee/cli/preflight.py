"""`cordee preflight [OPTIONS]`: check the GPUs, compute and interconnect of a job; name bad nodes.

Under Slurm every task runs it (`srun -N4 --ntasks-per-node=4 --kill-on-bad-exit=1 cordee
preflight`, one task per GPU); rank 0 collects every rank's results over a side channel
(MASTER_PORT + 1) that still works while a collective hangs. Outside a job it starts its own
ranks on this node: one per GPU, or --nproc CPU ranks (default 2). A rank that dies or stops
responding is named with its node, and the run ends within its timeout with exit 3.

Levels: quick (environment and GPU health through NVML, no torch, seconds), standard (quick +
GEMM, memory copy, stragglers, verified collectives within and across nodes, bad-node isolation
by pair tests), long (standard with larger sweeps and more iterations).

Exit codes: 0 ok, 1 warnings, 2 failures or bad input, 3 an error or a timeout.
"""

from __future__ import annotations

import os
import sys

import click

from cordee.cli import VERBS
from cordee.cli.options import Number, Seconds
from cordee.errors import InputError, shown

LEVELS = click.Choice(["quick", "standard", "long"])


@click.group(
    "preflight",
    invoke_without_command=True,
    help=VERBS["preflight"].help + "\n\n" + __doc__.split("\n\n", 1)[1].strip(),
    short_help=VERBS["preflight"].help,
)
@click.option("--level", type=LEVELS, default="standard", help="quick, standard (default) or long.")
@click.option(
    "--system",
    metavar="NAME",
    help="System profile (thresholds); default: chosen from the GPUs found, cpu-ci without GPUs.",
)
@click.option(
    "--thresholds",
    metavar="FILE",
    help="A system profile file (TOML, e.g. from `preflight baseline`) instead of --system.",
)
@click.option(
    "--json",
    "json_path",
    metavar="FILE",
    help="Write the results as JSON (schema cordee.preflight/1); '-' for stdout.",
)
@click.option(
    "--junit", "junit_path", metavar="FILE", help="Write JUnit XML (one testcase per check and node)."
)
@click.option(
    "--plot", "plot_path", metavar="FILE", help="Write a PNG of bus bandwidth against message size."
)
@click.option(
    "--exclude-file",
    "exclude_path",
    metavar="FILE",
    help="Write the bad nodes as a hostlist for srun --exclude (also printed).",
)
@click.option(
    "--nproc",
    type=Number(int, 1, 1024),
    metavar="N",
    help="Standalone: ranks to start (default: one per GPU, else 2).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    help="Default auto: the GPUs where the system has them.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=Seconds(most=86400),
    metavar="S",
    help="Whole run, seconds (default: quick 30, standard 180, long 900).",
)
@click.option(
    "--stall-timeout",
    "stall_timeout_s",
    type=Seconds(most=3600),
    default=5.0,
    metavar="S",
    help="A rank silent this long is named as stalled (default 5).",
)
@click.option(
    "--checks",
    metavar="PATTERN",
    help="Only the checks whose name matches these comma-separated globs (e.g. 'gpu.*,collective.*').",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines; a summary line instead of the table.")
@click.pass_context
def command(ctx: click.Context, **params) -> int | None:
    if ctx.invoked_subcommand is not None:
        return None
    from cordee.preflight.runner import Options, run

    if params["thresholds"] and params["system"]:
        raise InputError("--system and --thresholds: give one (a thresholds file is a system profile)")
    return run(Options(**params), dict(os.environ))


@command.command("baseline")
@click.argument("results", nargs=-1, required=True, metavar="RESULTS...")
@click.option(
    "--tolerance",
    type=Number(float, 0, 0.99),
    default=0.1,
    metavar="F",
    help="Thresholds at median x (1 - F) for minimums, x (1 + F) for maximums (default 0.1).",
)
@click.option("--name", default="baseline", metavar="N", help="Name of the profile (default baseline).")
@click.option(
    "--out", metavar="FILE", help="Write the profile here (default: stdout); use it with --thresholds."
)
def baseline(results: tuple[str, ...], tolerance: float, name: str, out: str | None) -> int:
    """A system profile from the medians of earlier runs' JSON results (--json files)."""
    from cordee.preflight.baseline import baseline as make_baseline
    from cordee.preflight.baseline import load_results

    text = make_baseline(load_results(list(results)), tolerance=tolerance, name=name)
    _emit(text, out)
    return 0


@command.command("ci-template")
@click.option(
    "--nodes", type=Number(int, 1, 65536), default=2, metavar="N", help="Nodes of the job (default 2)."
)
@click.option(
    "--environment",
    default="cordee",
    metavar="EDF",
    help="srun --environment: an EDF name or .toml path (default cordee).",
)
@click.option("--level", type=LEVELS, default="standard", help="Preflight level (default standard).")
@click.option("--system", default="cpu-ci", metavar="S", help="System profile (default cpu-ci).")
@click.option("--partition", metavar="P", help="Slurm partition.")
@click.option("--account", metavar="A", help="Slurm account.")
@click.option(
    "--time", "time_limit", default="00:10:00", metavar="T", help="Slurm time limit (default 00:10:00)."
)
@click.option("--stage", default="preflight", metavar="NAME", help="GitLab stage (default preflight).")
@click.option("--job", default="cordee-preflight", metavar="NAME", help="GitLab job name.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Runner tag (repeatable).")
@click.option("--out", metavar="FILE", help="Write the YAML here (default: stdout).")
def ci_template(out: str | None, time_limit: str, **params) -> int:
    """A GitLab CI job that runs the preflight through Slurm and keeps its reports."""
    from cordee.preflight.citemplate import render_ci

    text = render_ci(
        params.pop("nodes"),
        params.pop("environment"),
        params.pop("level"),
        params.pop("system"),
        params.pop("partition"),
        params.pop("account"),
        time_limit,
        params.pop("stage"),
        job=params.pop("job"),
        tags=params.pop("tags"),
    )
    _emit(text, out)
    return 0


def _emit(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    from cordee.fileio import write_atomic

    try:
        write_atomic(out, text)
    except OSError as e:
        raise InputError(f"cannot write {shown(out)}: {e.strerror or e}") from None
