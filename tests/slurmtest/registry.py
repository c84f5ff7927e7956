"""The clusters on this machine, recorded in /run/cordee-slurm/<id>.json with their owner's PID,
and their teardown: of one cluster, or of every cluster whose owner is gone."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import signal
from pathlib import Path

from .commands import run
from .network import NETNS_DIR, PREFIX, our_links, our_netns
from .processes import alive, clients_of, kill, pids_in_netns, signal_and_wait, start_time

REGISTRY = Path("/run/cordee-slurm")
GRACE = 5.0


@contextlib.contextmanager
def locked():
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with open(REGISTRY / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def records() -> list[dict]:
    out = []
    for path in sorted(REGISTRY.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out


def write_record(rec: dict) -> None:
    tmp = REGISTRY / f".{rec['id']}.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.rename(REGISTRY / f"{rec['id']}.json")


def owner_alive(rec: dict) -> bool:
    if rec.get("detached"):
        return True
    return alive(rec["owner_pid"]) and start_time(rec["owner_pid"]) == rec["owner_start"]


def teardown(rec: dict, grace: float = GRACE, reap=lambda: None) -> None:
    """Kill every process of the cluster and its clients, remove its namespaces, links, files."""
    if rec.get("state_dir"):
        signal_and_wait(clients_of(f"{rec['state_dir']}/slurm.conf"), signal.SIGKILL, 3.0, reap)
    kill(list(pids_in_netns(rec["netns"])), grace, reap)
    for name in rec["netns"]:
        if (NETNS_DIR / name).exists():
            run(["ip", "netns", "delete", name], check=False)
    for link in rec["links"]:
        run(["ip", "link", "delete", link], check=False)
    if rec.get("state_dir") and not rec.get("keep_state"):
        shutil.rmtree(rec["state_dir"], ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (REGISTRY / f"{rec['id']}.json").unlink()


def cleanup_stale(include_detached: bool = False) -> list[str]:
    """Tear down clusters whose owner process is gone, and namespaces/links nobody owns.
    Call with the registry lock held. Returns the ids removed."""
    removed, known = [], set()
    for rec in records():
        if owner_alive(rec) and not (include_detached and rec.get("detached")):
            known.add(rec["id"])
            continue
        teardown(rec, grace=1.0)
        removed.append(rec["id"])
    orphans = [n for n in our_netns() if n.split("-")[1] not in known]
    links = [n for n in our_links() if n[len(PREFIX) : len(PREFIX) + 4] not in known]
    if orphans or links:
        teardown({"id": "orphans", "netns": orphans, "links": links}, grace=1.0)
        removed.append("orphans")
    return removed
