"""Runs N local ranks of one command (`cordee launch --nproc-per-node N`) and keeps them honest:
if one rank fails, the others are stopped (SIGTERM, then SIGKILL after a grace period) and the
exit code is the failing rank's. Signals sent to cordee (Slurm's SIGTERM at cancel, SIGUSR1/2
before the time limit) are forwarded to every rank's process group."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from cordee import process
from cordee.process import exit_code_of

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


@dataclass
class RankProcess:
    rank: int
    local_index: int
    proc: process.Popen


def start_rank(argv: list[str], env: dict[str, str], cpus: frozenset[int] | None) -> process.Popen:
    # Own process group: stopping a rank also stops its data-loader workers. It stays in cordee's
    # session (and terminal). If cordee itself is killed (SIGKILL leaves no chance to forward
    # anything), the kernel kills the rank too, instead of leaving it running, unsupervised,
    # holding its GPU.
    return process.start(argv, env=env, isolate="group", die_with_parent=True, cpus=cpus)


def supervise(
    ranks: list[RankProcess],
    log: Callable[[str], None],
    grace_s: float = 10.0,
    poll_s: float = 0.05,
) -> int:
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        for r in ranks:
            if r.proc.poll() is None:
                process.signal_group(r.proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        failed: RankProcess | None = None
        running = list(ranks)
        while running:
            for r in list(running):
                rc = r.proc.poll()
                if rc is None:
                    continue
                running.remove(r)
                if rc != 0 and failed is None:
                    failed = r
            if failed is not None:
                break
            time.sleep(poll_s)
        if failed is not None:
            code = exit_code_of(failed.proc.returncode)
            others = [r for r in ranks if r.proc.poll() is None]
            log(
                f"rank {failed.rank} (local {failed.local_index}, pid {failed.proc.pid}) exited with "
                f"code {code}; stopping {len(others)} other rank(s)"
            )
            stop_all(others, grace_s, log)
            return code
        if received:
            log(f"all ranks ended after signal {signal.Signals(received[0]).name}")
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_all(ranks: list[RankProcess], grace_s: float, log: Callable[[str], None]) -> None:
    """SIGTERM to every rank's process group, SIGKILL to those still there after grace_s."""
    by_pid = {r.proc.pid: r for r in ranks}

    def killing(proc: process.Popen) -> None:
        r = by_pid[proc.pid]
        log(f"rank {r.rank} (pid {proc.pid}) ignored SIGTERM for {grace_s:g} s; sending SIGKILL")

    process.stop([r.proc for r in ranks], grace_s, on_kill=killing)
