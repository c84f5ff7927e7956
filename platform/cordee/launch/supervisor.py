"""Runs N local ranks of one command (`cordee launch --nproc-per-node N`) and keeps them honest:
if one rank fails, the others are stopped (SIGTERM, then SIGKILL after a grace period) and the
exit code is the failing rank's. Signals sent to cordee (Slurm's SIGTERM at cancel, SIGUSR1/2
before the time limit) are forwarded to every rank's process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


@dataclass
class RankProcess:
    rank: int
    local_index: int
    proc: subprocess.Popen


def exit_code_of(returncode: int) -> int:
    """Shell convention: a rank killed by signal S exits 128+S."""
    return 128 - returncode if returncode < 0 else returncode


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl():
    """libc's prctl, resolved in the parent: nothing is imported or loaded after fork."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def start_rank(argv: list[str], env: dict[str, str], cpus: frozenset[int] | None) -> subprocess.Popen:
    parent = os.getpid()
    prctl = _prctl()

    def prepare_child() -> None:
        # If cordee itself is killed (SIGKILL leaves no chance to forward anything), the kernel
        # kills the rank too, instead of leaving it running, unsupervised, holding its GPU.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # cordee died before prctl took effect
            os._exit(1)
        if cpus:
            os.sched_setaffinity(0, cpus)

    # Own process group: stopping a rank also stops its data-loader workers.
    return subprocess.Popen(argv, env=env, process_group=0, preexec_fn=prepare_child)


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
                _signal_group(r.proc, signum)

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
    for r in ranks:
        _signal_group(r.proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for r in ranks:
        try:
            r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"rank {r.rank} (pid {r.proc.pid}) ignored SIGTERM for {grace_s:g} s; sending SIGKILL")
            _signal_group(r.proc, signal.SIGKILL)
            r.proc.wait()
