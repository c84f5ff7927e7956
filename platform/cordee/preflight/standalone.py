"""Standalone preflight (no Slurm step, no launcher): this process is the collector and starts
the ranks itself, one per GPU or N CPU ranks (`--nproc`), each `python -m cordee.preflight.worker`
with the torch variables set, in its own process group, killed with this process. On an abort it
kills them all, reports and exits 3."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

from cordee import process
from cordee.errors import InputError
from cordee.preflight.collector import Collector
from cordee.preflight.gate import gpu_models
from cordee.preflight.outputs import Reporting
from cordee.preflight.results import Result
from cordee.preflight.runner import Options, make_plan

WORKER_VAR = "CORDEE_PREFLIGHT_WORKER"  # the collector's address and the options, JSON
CPU_RANKS = 2  # standalone without GPUs
STOP_GRACE_S = 1.0  # an aborted run: SIGTERM, then SIGKILL (a stopped rank only dies of SIGKILL)
EXIT_WAIT_S = 10.0  # ranks given their exit code: how long they may take to leave


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(returncode: int) -> str:
    name = process.signal_name(returncode)
    return f"was killed by {name}" if name else f"exited with code {returncode}"


def run_standalone(opts: Options, environ: Mapping[str, str]) -> int:
    gpus = len(gpu_models())
    plan = make_plan(opts, environ, opts.nproc or gpus or None)
    n = opts.nproc or (gpus if plan.device == "cuda" else CPU_RANKS)
    if plan.device == "cuda" and n > gpus:
        raise InputError(f"--nproc {n}: this node has {gpus} GPUs (one rank per GPU)")
    node = socket.gethostname()
    reporting = Reporting(opts, plan, "standalone")
    procs: dict[int, subprocess.Popen] = {}

    def watch() -> list[Result]:  # ranks that ended before saying hello (the others: dropped connection)
        return [
            Result(
                "preflight",
                "error",
                node,
                rank,
                detail=f"rank {rank} on {node} {_describe(rc)} before connecting",
            )
            for rank, p in list(procs.items())  # the main thread is still adding ranks
            if (rc := p.poll()) is not None and rank not in collector.ranks
        ]

    def exit_info(rank: int) -> str | None:
        try:
            return _describe(procs[rank].wait(timeout=1.0))
        except (subprocess.TimeoutExpired, KeyError):
            return None

    collector = Collector(
        n,
        stall_timeout_s=opts.stall_timeout_s,
        timeout_s=opts.timeout,
        host="127.0.0.1",
        who="cordee preflight",
        node=node,
        on_check_done=reporting.progress,
        watch=watch,
        exit_info=exit_info,
    )
    port = collector.start()
    base = _rank_env(environ, opts, port, n)
    try:
        for rank in range(n):
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            argv = [sys.executable, "-m", "cordee.preflight.worker"]
            procs[rank] = process.start(argv, env=env, isolate="group", die_with_parent=True)
        outcome = collector.wait()
    except KeyboardInterrupt:
        collector.abort([Result("preflight", "error", node, detail="interrupted (SIGINT)")])
        outcome = collector.wait()
    except OSError as e:
        collector.abort([Result("preflight", "error", node, detail=f"cannot start a rank: {e}")])
        outcome = collector.wait()
    if outcome.errors:
        process.stop(list(procs.values()), STOP_GRACE_S)
    code = reporting.write(reporting.conclude(outcome))
    collector.finish(code)
    _reap(procs)
    return code


def _rank_env(environ: Mapping[str, str], opts: Options, port: int, n: int) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update(
        WORLD_SIZE=str(n),
        LOCAL_WORLD_SIZE=str(n),
        NODE_RANK="0",
        GROUP_RANK="0",
        GROUP_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
    )
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one node: gloo must not pick an interface that is down
    env[WORKER_VAR] = json.dumps({"host": "127.0.0.1", "port": port, "options": opts.as_dict()})
    return env


def _reap(procs: dict[int, subprocess.Popen]) -> None:
    """The ranks got their exit code and leave; those still there after EXIT_WAIT_S are stopped
    (TERM, then KILL), and every one is reaped."""
    deadline = time.monotonic() + EXIT_WAIT_S
    for p in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
    process.stop(list(procs.values()), STOP_GRACE_S)
