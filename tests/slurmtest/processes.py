"""Processes of a cluster, found through /proc by network namespace, and how they are killed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from .network import NETNS_DIR

CLIENTS = {"srun", "salloc", "sbatch", "sattach", "scontrol", "sinfo", "squeue", "scancel", "sstat"}


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pids_in_netns(netns: list[str]) -> dict[int, str]:
    """PID -> namespace name, for every process inside one of `netns`."""
    inodes = {}
    for name in netns:
        with contextlib.suppress(OSError):
            inodes[f"net:[{os.stat(NETNS_DIR / name).st_ino}]"] = name
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ns = os.readlink(f"/proc/{entry.name}/ns/net")
                if ns in inodes and alive(int(entry.name)):
                    found[int(entry.name)] = inodes[ns]
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_reaper(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"PR_SET_CHILD_SUBREAPER" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def clients_of(conf: str) -> list[int]:
    """srun/salloc/sbatch... processes (any namespace) that talk to the cluster of `conf`: they
    would wait forever for a controller that is gone."""
    needle = f"\0SLURM_CONF={conf}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if (
                    _comm(int(entry.name)) in CLIENTS
                    and needle in b"\0" + Path(f"/proc/{entry.name}/environ").read_bytes()
                ):
                    found.append(int(entry.name))
    return found


def signal_and_wait(pids: list[int], sig: int, wait: float, reap) -> list[int]:
    """Send `sig` to `pids`, then call `reap()` and wait up to `wait` seconds for them to die.
    Returns those still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while True:
        reap()
        pids = [p for p in pids if alive(p)]
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def kill(pids: list[int], grace: float, reap=lambda: None) -> None:
    """SIGTERM each PID, SIGKILL those still alive after `grace` seconds. slurmstepd ignores
    SIGTERM (and slurmd waits for it), so it gets SIGKILL after one second; munged goes last
    (the Slurm daemons still authenticate while shutting down), and reapers after it, to reap
    what the SIGKILLs leave behind."""
    kinds = {p: "reaper" if _is_reaper(p) else _comm(p) for p in pids}
    stepds = [p for p in pids if kinds[p] == "slurmstepd"]
    others = [p for p in pids if kinds[p] not in ("slurmstepd", "munged", "reaper")]
    t0 = time.monotonic()
    signal_and_wait(others, signal.SIGTERM, 0, reap)
    signal_and_wait(signal_and_wait(stepds, signal.SIGTERM, min(1.0, grace), reap), signal.SIGKILL, 3, reap)
    left = signal_and_wait(others, 0, max(0.0, grace - (time.monotonic() - t0)), reap)
    signal_and_wait(left, signal.SIGKILL, 3.0, reap)
    for kind in ("munged", "reaper"):
        group = [p for p in pids if kinds[p] == kind]
        signal_and_wait(signal_and_wait(group, signal.SIGTERM, 2.0, reap), signal.SIGKILL, 3.0, reap)
