"""`cordee launch [--profile P] [--nproc-per-node N] -- CMD ...`

Detects the launch, sets the torch variables, the binding and the fabric profile (each logged),
then execs CMD so that Slurm's signals reach the program directly. With --nproc-per-node N > 1
it starts N local ranks and supervises them instead (see supervisor.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

import click

from cordee.errors import InputError


def _log(prefix: str, msg: str) -> None:
    click.echo(f"cordee[{prefix}]: {msg}", err=True)


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


def _prepare(environ, launch, profile_name, bind, gpus):
    """Binding + environment plan for one rank."""
    from cordee.cluster import binding as b
    from cordee.cluster.plan import plan_environment

    bnd = None
    if bind != "none":
        allowed = frozenset(os.sched_getaffinity(0))
        bnd = b.plan_binding(
            gpus,
            environ.get("CUDA_VISIBLE_DEVICES"),
            launch.local_rank,
            launch.local_world_size,
            allowed,
            keep_cpu_binding=b.slurm_bound_cpus(environ),
        )
    name, pvars = _profile_vars(profile_name, launch.nnodes)
    return bnd, plan_environment(environ, launch, bnd, name, pvars)


def _report(prefix: str, bnd, plan, verbose: bool) -> None:
    if bnd is not None:
        gpu = f"GPU {bnd.gpu.pci_bus_id} (cuda:{bnd.device_index})" if bnd.gpu else "no GPU"
        from cordee.cluster.binding import format_cpulist

        _log(prefix, f"binding: {bnd.mode}, {gpu}, CPUs {format_cpulist(bnd.cpus)} ({bnd.reason})")
    for a in plan.actions:
        if a.action == "same" and not verbose:
            continue
        _log(prefix, a.describe())


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--profile",
    "profile_name",
    metavar="P",
    help="Fabric profile (see `cordee env check`); 'none' applies none. "
    "Default: $CORDEE_PROFILE, else chosen from the hardware found.",
)
@click.option(
    "--nproc-per-node",
    type=click.IntRange(1, 1024),
    default=None,
    help="Start N local ranks per launched task and supervise them.",
)
@click.option(
    "--bind",
    type=click.Choice(["auto", "none"]),
    default="auto",
    show_default=True,
    help="GPU/CPU binding policy (README: GPU and CPU binding).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    help="Seconds the other ranks get after SIGTERM when one rank fails.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log on every rank, and unchanged variables too.")
@click.option("-q", "--quiet", is_flag=True, help="Log nothing but errors.")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, required=True)
def launch(profile_name, nproc_per_node, bind, grace, verbose, quiet, cmd):
    """Set rank variables, fabric profile and binding, then exec CMD."""
    from cordee.cluster import binding as b
    from cordee.cluster.launchenv import detect, expand_local_ranks

    argv = list(cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise InputError("no command given: cordee launch [OPTIONS] -- CMD ...")
    if shutil.which(argv[0]) is None:
        raise InputError(f"command not found: {argv[0]}")
    environ = dict(os.environ)
    profile_name = profile_name or environ.get("CORDEE_PROFILE") or None
    base = detect(environ)
    gpus = b.read_gpus() if bind != "none" else []
    node = socket.gethostname()

    if not nproc_per_node or nproc_per_node == 1:
        prefix = f"rank {base.rank}/{base.world_size} {node}"
        bnd, plan = _prepare(environ, base, profile_name, bind, gpus)
        if not quiet and (verbose or base.rank == 0):
            for note in base.notes:
                _log(prefix, note)
            _report(prefix, bnd, plan, verbose)
        if bnd is not None and bnd.cpus_changed:
            os.sched_setaffinity(0, bnd.cpus)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(argv[0], argv, plan.env)  # no return: Slurm's signals now reach CMD directly

    from cordee.cli.supervisor import RankProcess, start_rank, supervise

    if base.scheduler == "local" and base.master_port_source != "user":
        environ["MASTER_PORT"] = str(_free_port())
        base = detect(environ)
    ranks = []
    for i in range(nproc_per_node):
        view = expand_local_ranks(base, nproc_per_node, i)
        prefix = f"rank {view.rank}/{view.world_size} {node}"
        bnd, plan = _prepare(environ, view, profile_name, bind, gpus)
        if not quiet and (verbose or view.rank == 0):
            _report(prefix, bnd, plan, verbose)
        cpus = bnd.cpus if bnd is not None and bnd.cpus_changed else None
        ranks.append(RankProcess(view.rank, i, start_rank(argv, plan.env, cpus)))
    rc = supervise(ranks, lambda m: _log(f"{node}", m), grace_s=grace)
    sys.exit(rc)
