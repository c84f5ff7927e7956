"""`cordee launch [--profile P] [--nproc-per-node N] -- CMD ...`

Detects the launch, sets the torch variables, the binding and the fabric profile (each logged),
then execs CMD so that Slurm's signals reach the program directly. With --nproc-per-node N > 1
it starts N local ranks and supervises them: if one fails, the others are stopped and cordee
exits with its code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys

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


def register(sub, name: str, help_: str) -> None:
    p = sub.add_parser(
        name,
        help=help_,
        usage="cordee launch [OPTIONS] -- CMD ...",
        description=__doc__.split("\n\n", 1)[1].strip(),
    )
    p.add_argument(
        "--profile",
        dest="profile_name",
        metavar="P",
        help="Fabric profile (see `cordee env check`); 'none' applies none. "
        "Default: $CORDEE_PROFILE, else chosen from the hardware found.",
    )
    p.add_argument(
        "--nproc-per-node",
        type=_number_in(int, 1, 1024),
        default=None,
        metavar="N",
        help="Start N local ranks per launched task and supervise them.",
    )
    p.add_argument(
        "--bind",
        choices=["auto", "none"],
        default="auto",
        help="GPU/CPU binding policy (README: GPU and CPU binding); default auto.",
    )
    p.add_argument(
        "--grace",
        type=_number_in(float, 0, 3600),
        default=10.0,
        metavar="S",
        help="Seconds the other ranks get after SIGTERM when one rank fails (default 10).",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="Log on every rank, and unchanged variables too."
    )
    p.add_argument("-q", "--quiet", action="store_true", help="Log nothing but errors.")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print what each rank would get (JSON, schema cordee.launch/1) and start nothing.",
    )
    p.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="CMD", help="The command and its arguments, after '--'."
    )
    p.set_defaults(run=run)


def _number_in(kind: type, lo: float, hi: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({kind.__name__})") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{hi}")
        return value

    return parse


def run(args) -> int:
    environ = dict(os.environ)
    node = os.uname().nodename
    try:
        return _launch(args, environ, node)
    except InputError as e:
        # Name the task: in a 4096-rank step, "which node?" is the first question.
        task = environ.get("SLURM_PROCID")
        raise InputError(f"{node}{f' (task {task})' if task else ''}: {e}") from None


def _launch(args, environ: dict[str, str], node: str) -> int:
    profile_name, nproc_per_node, bind = args.profile_name, args.nproc_per_node, args.bind
    from cordee.launch import binding as b
    from cordee.launch.launchenv import detect, expand_local_ranks

    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise InputError("no command given: cordee launch [OPTIONS] -- CMD ...")
    if shutil.which(argv[0], path=environ.get("PATH")) is None:
        raise InputError(f"command not found: {argv[0]}")
    profile_name = profile_name or environ.get("CORDEE_PROFILE") or None
    base = detect(environ)
    gpus = b.read_gpus() if bind != "none" else []
    profile = _profile_vars(profile_name, base.nnodes)

    if not args.quiet and (args.verbose or base.rank == 0):
        for note in base.notes:
            _log(f"rank {base.rank}/{base.world_size} {node}", note)

    if args.dry_run:
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

    if not nproc_per_node or nproc_per_node == 1:
        bnd, plan = _prepare(environ, base, profile, bind, gpus)
        if not args.quiet and (args.verbose or base.rank == 0):
            _report(f"rank {base.rank}/{base.world_size} {node}", bnd, plan, args.verbose)
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
        if not args.quiet and (args.verbose or view.rank == 0):
            _report(f"rank {view.rank}/{view.world_size} {node}", bnd, plan, args.verbose)
        cpus = bnd.cpus if bnd is not None and bnd.cpus_changed else None
        try:
            ranks.append(RankProcess(view.rank, i, start_rank(argv, plan.env, cpus)))
        except (OSError, subprocess.SubprocessError) as e:
            stop_all(ranks, args.grace, lambda m: _log(node, m))
            raise CordeeError(f"cannot start rank {view.rank}: {e}") from None
    return supervise(ranks, lambda m: _log(node, m), grace_s=args.grace)
