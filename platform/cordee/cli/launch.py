"""`cordee launch [--profile P] [--preflight none|quick] [--nproc-per-node N] -- CMD ...`

Detects the launch, sets the torch variables, the binding and the fabric profile (each logged),
then execs CMD so that Slurm's signals reach the program directly. With --nproc-per-node N > 1
it starts N local ranks and supervises them: if one fails, the others are stopped and cordee
exits with its code.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from typing import NamedTuple

import click

from cordee.cli.options import EndsInCommand, Number
from cordee.errors import CordeeError, InputError


def _log(prefix: str, msg: str) -> None:
    print(f"cordee[{prefix}]: {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _profile_vars(name: str | None, nnodes: int) -> tuple[str | None, dict[str, tuple[str, str]]]:
    from cordee import profiles

    if name is None:
        name = profiles.suggest(nnodes)
    if name == "none":
        return None, {}
    prof = profiles.load(name)
    return prof.name, {v.name: (v.value, v.source) for v in prof.variables}


def _prepare(environ, launch, profile, bind, gpus):
    """Binding + environment plan for one rank; profile = (name, variables) from _profile_vars."""
    from cordee.launch.binding import plan_task_binding
    from cordee.launch.plan import plan_environment

    bnd = None
    if bind != "none":
        bnd = plan_task_binding(environ, launch.local_rank, launch.local_world_size, gpus)
    return bnd, plan_environment(environ, launch, bnd, *profile)


def _report(prefix: str, bnd, plan, verbose: bool) -> None:
    if bnd is not None:
        gpu = f"GPU {bnd.gpu.pci_bus_id} (cuda:{bnd.device_index})" if bnd.gpu else "no GPU"
        from cordee.launch.binding import format_cpulist

        _log(prefix, f"binding: {bnd.mode}, {gpu}, CPUs {format_cpulist(bnd.cpus)} ({bnd.reason})")
    for a in plan.actions:
        if a.action == "same" and not verbose:
            continue
        _log(prefix, a.describe())


def _dry_run_rank(view, bnd, plan) -> dict:
    return {
        "rank": view.rank,
        "local_rank": view.local_rank,
        "binding": bnd.as_dict() if bnd is not None else None,
        "env": [
            {
                "name": a.name,
                "value": a.value,
                "action": a.action,
                "origin": a.origin,
                "proposed": a.proposed,
                "source": a.source,
            }
            for a in plan.actions
        ],
    }


class Options(NamedTuple):
    """The command line as plain values, for _launch."""

    cmd: list[str]
    profile_name: str | None
    nproc_per_node: int | None
    bind: str
    grace: float
    verbose: bool
    quiet: bool
    dry_run: bool
    preflight: str


@click.command(
    "launch",
    cls=EndsInCommand,
    help=__doc__.split("\n\n", 1)[1].strip() + "\n\nCMD: the command and its arguments, after '--'.",
)
@click.option(
    "--profile",
    "profile_name",
    metavar="P",
    help="Fabric profile (see `cordee env check`); 'none' applies none. "
    "Default: $CORDEE_PROFILE, else chosen from the hardware found.",
)
@click.option(
    "--nproc-per-node",
    type=Number(int, 1, 1024),
    metavar="N",
    help="Start N local ranks per launched task and supervise them.",
)
@click.option(
    "--bind",
    type=click.Choice(["auto", "none"]),
    default="auto",
    help="GPU/CPU binding policy (README: GPU and CPU binding); default auto.",
)
@click.option(
    "--grace",
    type=Number(float, 0, 3600),
    default=10.0,
    metavar="S",
    help="Seconds the other ranks get after SIGTERM when one rank fails (default 10).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log on every rank, and unchanged variables too.")
@click.option("-q", "--quiet", is_flag=True, help="Log nothing but errors.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what each rank would get (JSON, schema cordee.launch/1) and start nothing.",
)
@click.option(
    "--preflight",
    type=click.Choice(["none", "quick"]),
    default="none",
    help="quick: check this node (environment, GPUs through NVML; seconds, no torch) before starting "
    "CMD, and refuse to start it (exit 2) on a failure. Default none.",
)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD ...")
def command(**params) -> int:
    opts = Options(**params)
    environ = dict(os.environ)
    node = os.uname().nodename
    try:
        return _launch(opts, environ, node)
    except InputError as e:
        # Name the task: in a 4096-rank step, "which node?" is the first question.
        task = environ.get("SLURM_PROCID")
        raise InputError(f"{node}{f' (task {task})' if task else ''}: {e}") from None


def _launch(opts: Options, environ: dict[str, str], node: str) -> int:
    profile_name, nproc_per_node, bind, argv = opts.profile_name, opts.nproc_per_node, opts.bind, opts.cmd
    from cordee.launch import binding as b
    from cordee.launch.launchenv import detect, expand_local_ranks

    if not argv:
        raise InputError("no command given: cordee launch [OPTIONS] -- CMD ...")
    if shutil.which(argv[0], path=environ.get("PATH")) is None:
        raise InputError(f"command not found: {argv[0]}")
    profile_name = profile_name or environ.get("CORDEE_PROFILE") or None
    base = detect(environ)
    gpus = b.read_gpus() if bind != "none" else []
    profile = _profile_vars(profile_name, base.nnodes)

    if not opts.quiet and (opts.verbose or base.rank == 0):
        for note in base.notes:
            _log(f"rank {base.rank}/{base.world_size} {node}", note)

    if opts.dry_run:
        n = nproc_per_node or 1
        views = [expand_local_ranks(base, n, i) for i in range(n)] if n > 1 else [base]
        ranks = [_dry_run_rank(view, *_prepare(environ, view, profile, bind, gpus)) for view in views]
        doc = {
            "schema": "cordee.launch/1",
            "command": argv,
            "node": node,
            "profile": profile[0],
            "launch": base.as_dict(),
            "ranks": ranks,
        }
        print(json.dumps(doc, indent=2))
        return 0

    if opts.preflight == "quick":
        from cordee.preflight.gate import quick_gate

        line = quick_gate(environ, base, node)  # raises on a failure: CMD never starts
        if not opts.quiet and (opts.verbose or base.rank == 0 or "warning" in line):
            _log(f"rank {base.rank}/{base.world_size} {node}", line)

    if not nproc_per_node or nproc_per_node == 1:
        bnd, plan = _prepare(environ, base, profile, bind, gpus)
        if not opts.quiet and (opts.verbose or base.rank == 0):
            _report(f"rank {base.rank}/{base.world_size} {node}", bnd, plan, opts.verbose)
        if bnd is not None and bnd.cpus_changed:
            os.sched_setaffinity(0, bnd.cpus)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(argv[0], argv, plan.env)  # no return: Slurm's signals now reach CMD directly

    from cordee.launch.supervisor import RankProcess, start_rank, stop_all, supervise

    if base.scheduler == "local" and base.master_port_source != "user":
        environ["MASTER_PORT"] = str(_free_port())
        base = detect(environ)
    # Plan every rank before starting any: a rank that cannot be bound fails the launch whole.
    views = [expand_local_ranks(base, nproc_per_node, i) for i in range(nproc_per_node)]
    plans = [_prepare(environ, view, profile, bind, gpus) for view in views]
    ranks = []
    for i, (view, (bnd, plan)) in enumerate(zip(views, plans, strict=True)):
        if not opts.quiet and (opts.verbose or view.rank == 0):
            _report(f"rank {view.rank}/{view.world_size} {node}", bnd, plan, opts.verbose)
        cpus = bnd.cpus if bnd is not None and bnd.cpus_changed else None
        try:
            ranks.append(RankProcess(view.rank, i, start_rank(argv, plan.env, cpus)))
        except (OSError, subprocess.SubprocessError) as e:
            stop_all(ranks, opts.grace, lambda m: _log(node, m))
            raise CordeeError(f"cannot start rank {view.rank}: {e}") from None
    return supervise(ranks, lambda m: _log(node, m), grace_s=opts.grace)
