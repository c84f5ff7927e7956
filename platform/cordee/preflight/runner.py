"""Running a preflight: the options, what every rank must agree on (the plan), the sequence of
checks on one rank, and the job mode (every task of a Slurm step, or of a torchrun-style launch,
runs `cordee preflight`; rank 0 also hosts the collector, port MASTER_PORT + 1).

Standalone runs (no launcher: the command starts its own ranks) are in `standalone`. Nothing here
imports torch: the checks that need it load it themselves.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cordee.errors import EXIT_UNKNOWN, InputError, shown
from cordee.launch.launchenv import LaunchEnv, detect
from cordee.preflight import registry
from cordee.preflight.collector import CONNECT_WINDOW_S, Collector
from cordee.preflight.context import Context, run_check
from cordee.preflight.gate import gpu_models
from cordee.preflight.results import LEVELS, Check, Result
from cordee.preflight.sidechannel import PreflightError, Reporter, heartbeat_s, kill_local
from cordee.process import exit_now

LEVEL_TIMEOUT_S = {"quick": 30.0, "standard": 180.0, "long": 900.0}
STALL_TIMEOUT_S = 5.0
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Options:
    """The command line, as plain values (also sent to standalone ranks as JSON)."""

    level: str = "standard"
    system: str | None = None
    thresholds: str | None = None  # a profile file instead of --system
    json_path: str | None = None  # "-": stdout
    junit_path: str | None = None
    plot_path: str | None = None
    exclude_path: str | None = None
    nproc: int | None = None  # standalone ranks
    device: str = "auto"
    timeout_s: float | None = None  # None: by level
    stall_timeout_s: float = STALL_TIMEOUT_S
    checks: str | None = None  # comma-separated name globs
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise InputError(f"level {shown(self.level)} is not one of {', '.join(LEVELS)}")
        if self.device not in DEVICES:
            raise InputError(f"device {shown(self.device)} is not one of {', '.join(DEVICES)}")

    @property
    def timeout(self) -> float:
        return self.timeout_s or LEVEL_TIMEOUT_S[self.level]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Plan:
    """What every rank must agree on; each rank derives it from the same options."""

    profile: object  # systems.SystemProfile
    device: str  # "cpu" | "cuda"
    backend: str  # "gloo" | "nccl"
    checks: tuple[Check, ...]


def make_plan(opts: Options, environ: Mapping[str, str], gpus_per_node: int | None = None) -> Plan:
    """The system profile (--thresholds file, --system, or suggested from the GPUs found), the
    device and backend, and the checks. InputError on any bad input."""
    from cordee.preflight import systems

    models = gpu_models()
    gpus = (gpus_per_node or len(models)) if models else None  # picks the profile's [gpus.N] variant
    if opts.thresholds:
        profile = systems.load_system_file(opts.thresholds, gpus=gpus)
    else:
        name = opts.system or systems.suggest_system(models[0] if models else None, len(models))
        profile = systems.load_system(name, gpus=gpus)
    device = opts.device
    if device == "auto":
        if profile.gpus_per_node and not models:
            raise InputError(
                f"system {profile.name} is for nodes with GPUs and this node has none: choose "
                "--system cpu-ci (or --device cpu to run its checks on the CPU anyway)"
            )
        device = "cuda" if profile.gpus_per_node else "cpu"
    if device == "cuda" and not models:
        raise InputError("--device cuda: no NVIDIA GPU on this node")
    found = registry.select(registry.checks(opts.level, environ), opts.checks)
    if opts.level != "quick":
        from cordee.bench.collectives import fault_from_env

        fault_from_env(environ)  # a malformed test switch is bad input, said once, before any rank starts
    return Plan(profile, device, "nccl" if device == "cuda" else "gloo", tuple(found))


def check_outputs(opts: Options) -> None:
    """Each file asked for can be written where it is asked for: said before the run, not after."""
    asked = [("--json", opts.json_path), ("--junit", opts.junit_path), ("--plot", opts.plot_path)]
    for option, path in [*asked, ("--exclude-file", opts.exclude_path)]:
        if path is None or (path == "-" and option == "--json"):
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            why = "is a directory" if os.path.isdir(path) else f"cannot be written in {shown(folder)}"
            raise InputError(f"{option} {shown(path)}: {why}")


# --- one rank ---------------------------------------------------------------------------------


def rank_main(
    opts: Options,
    plan: Plan,
    environ: Mapping[str, str],
    launch: LaunchEnv,
    host: str,
    port: int,
    *,
    on_abort=None,
    on_sigterm=None,
) -> int:
    """Connect to the collector, run this rank's checks, report each, return the run's exit code."""
    node = socket.gethostname()
    mine = [c for c in plan.checks if registry.runs_here(c, launch.local_rank)]
    beat = heartbeat_s(launch.world_size, opts.stall_timeout_s)
    reporter = Reporter(
        launch.rank, node, launch.local_rank, stall_timeout_s=opts.stall_timeout_s, on_abort=on_abort,
        heartbeat_s=beat,
    )  # fmt: skip

    def sigterm(signum, frame) -> None:
        # srun --kill-on-bad-exit: once one rank has exited with the run's code (2, say), the
        # others get SIGTERM; they know the code by then and exit with it, so srun reports it.
        if reporter.code is not None:
            exit_now(reporter.code)
        if on_sigterm is None:
            exit_now(EXIT_UNKNOWN)
        on_sigterm()

    signal.signal(signal.SIGTERM, sigterm)
    deadline = time.monotonic() + min(CONNECT_WINDOW_S, opts.timeout)
    reporter.connect(host, port, deadline, [c.name for c in mine])
    ctx = Context(
        environ,
        launch,
        node,
        opts.level,
        plan.profile,
        plan.device,
        plan.backend,
        pg_timeout_s=opts.timeout,
        own_pids=(os.getpid(),),
    )
    for check in mine:
        reporter.begin(check.name, check.timeout_s)
        reporter.result(check.name, run_check(check, ctx))
    # Every rank is past every collective once this returns. No teardown of the process groups:
    # the caller ends the process at once (a broken NCCL communicator can hang its destruction, and
    # srun --kill-on-bad-exit must find every rank exiting with the run's code).
    return reporter.end()


# --- job mode: every task runs `cordee preflight` ------------------------------------------------


def run(opts: Options, environ: Mapping[str, str]) -> int:
    """`cordee preflight`: job mode inside a launched job, else standalone."""
    check_outputs(opts)
    launch = detect(environ)
    if launch.scheduler == "local":
        from cordee.preflight.standalone import run_standalone

        return run_standalone(opts, environ)
    plan = make_plan(opts, environ, launch.local_world_size)
    port = launch.master_port + 1
    if port > 65535:
        raise InputError(f"MASTER_PORT={launch.master_port}: the collector needs the next port, {port}")
    if launch.rank != 0:
        exit_now(rank_main(opts, plan, environ, launch, launch.master_addr, port))
    exit_now(_rank_zero(opts, plan, environ, launch, port))


def _rank_zero(opts: Options, plan: Plan, environ, launch: LaunchEnv, port: int) -> int:
    from cordee.preflight.outputs import Reporting

    node = socket.gethostname()
    reporting = Reporting(opts, plan, launch.scheduler)
    collector = Collector(
        launch.world_size,
        stall_timeout_s=opts.stall_timeout_s,
        timeout_s=opts.timeout,
        port=port,
        who="rank 0",
        node=node,
        on_check_done=reporting.progress,
    )
    try:
        collector.start()
    except OSError as e:
        raise PreflightError(
            f"rank 0 on {node}: cannot listen on port {port} for the collector: {e}"
        ) from None
    finished: list[int] = []

    def finisher() -> None:  # the main thread may be stuck in a collective: this thread ends the run
        outcome = collector.wait()
        code = reporting.write(reporting.conclude(outcome))  # before the ranks may exit (srun kills)
        collector.finish(code)
        if outcome.errors:
            kill_local(collector.stalled, node)  # as every rank on a stalled rank's node does
            exit_now(EXIT_UNKNOWN)
        finished.append(code)

    thread = threading.Thread(target=finisher, name="preflight-finisher", daemon=True)
    thread.start()

    def on_abort(msg: dict) -> None:  # the finisher reports and exits; kill what is stopped here
        kill_local([tuple(t) for t in msg.get("kill", []) if isinstance(t, list) and len(t) == 2], node)

    def on_sigterm() -> None:  # scancel, the time limit, or srun after another task failed
        why = f"rank 0 on {node} received SIGTERM (scancel, the time limit, or srun --kill-on-bad-exit)"
        collector.abort([Result("preflight", "error", node, 0, detail=why)])

    code = rank_main(opts, plan, environ, launch, "127.0.0.1", port, on_abort=on_abort, on_sigterm=on_sigterm)
    thread.join()
    return finished[0] if finished else code
