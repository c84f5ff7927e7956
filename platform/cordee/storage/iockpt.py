"""The checkpoint pattern of `cordee io bench`: every rank of a job writes its shard at once.

The ranks meet through files in the shared scratch directory, with no torch and no network: each
rank writes `arrive-R.json` (atomically: a rename), rank 0 waits for all of them and writes
`go.json` with a wall-clock start a moment ahead, every rank writes its shard from then, fsyncs
it and writes `result-R.json`; rank 0 gathers the results. A rank that never arrives is named
(with the node it should run on) and the bench exits 3. The directory must be on a filesystem
every node sees: the point is to measure that filesystem.
"""

from __future__ import annotations

import json
import os
import socket
import time

from cordee.errors import EXIT_UNKNOWN, CordeeError
from cordee.fileio import read_bounded, write_atomic
from cordee.launch.launchenv import LaunchEnv
from cordee.storage import iofs
from cordee.storage.iothroughput import gib_s, write_file

START_AHEAD_S = 0.5  # go.json names a start this far ahead, so that every rank sees it in time


class RanksMissing(CordeeError):
    exit_code = EXIT_UNKNOWN


def scratch_name(launch: LaunchEnv) -> str:
    """One name that every rank of a launch derives by itself (job and step, or the rendezvous port)."""
    parts = [launch.scheduler, launch.job_id or "nojob", launch.step_id or "0", str(launch.master_port)]
    return "cordee-io-" + "-".join("".join(c if c.isalnum() else "_" for c in p)[:40] for p in parts)


def expected_node(launch: LaunchEnv, rank: int) -> str:
    """Where a rank should run: srun's default block distribution, when it can be inferred."""
    if launch.scheduler != "slurm":
        return socket.gethostname() if launch.nnodes == 1 else "node unknown"
    nodes = launch.nodes
    if len(nodes) == launch.world_size:
        return nodes[rank]
    if nodes and launch.world_size % len(nodes) == 0:
        return nodes[rank // (launch.world_size // len(nodes))]
    return "node unknown"


def _poll_s(world: int) -> float:
    return min(0.5, 0.01 * max(1, world // 8))  # thousands of ranks must not flood the metadata server


def _record(path: str) -> dict:
    try:
        return json.loads(read_bounded(path))
    except (ValueError, CordeeError) as e:
        raise CordeeError(f"io bench: {path}: not a rank record ({e}); another run in PATH?") from None


def _gather(directory: str, prefix: str, launch: LaunchEnv, timeout_s: float, check, what: str) -> dict:
    """The records `PREFIX-R.json` of every rank, waiting at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    found: dict[int, dict] = {}
    while True:
        check()
        for name in os.listdir(directory):
            if name.startswith(prefix + "-") and name.endswith(".json"):
                rank = name[len(prefix) + 1 : -5]
                if rank.isdigit() and int(rank) < launch.world_size and int(rank) not in found:
                    found[int(rank)] = _record(os.path.join(directory, name))
        if len(found) >= launch.world_size:
            return found
        if time.monotonic() > deadline:
            missing = [r for r in range(launch.world_size) if r not in found]
            shown = ", ".join(f"{r} ({expected_node(launch, r)})" for r in missing[:16])
            more = f" and {len(missing) - 16} more" if len(missing) > 16 else ""
            raise RanksMissing(
                f"io bench: rank(s) {shown}{more} never {what} within {timeout_s:g} s in {directory} "
                "(is PATH on a filesystem every node shares?)"
            )
        time.sleep(_poll_s(launch.world_size))


def _wait_go(directory: str, deadline: float, check) -> float:
    path = os.path.join(directory, "go.json")
    while True:
        check()
        if os.path.exists(path):
            try:
                return float(_record(path)["start_at"])
            except (KeyError, TypeError, ValueError):
                raise CordeeError(f"io bench: {path}: no start time in it") from None
        if time.monotonic() > deadline:
            raise RanksMissing(f"io bench: rank 0 never gave the start signal in time in {directory}")
        time.sleep(0.01)


def run_rank(directory: str, launch: LaunchEnv, size: int, timeout_s: float, check, say) -> dict | None:
    """This rank's part of the pattern. Rank 0 returns the gathered results, the others None."""
    node = socket.gethostname()
    me = {"rank": launch.rank, "node": node, "pid": os.getpid()}
    write_atomic(os.path.join(directory, f"arrive-{launch.rank}.json"), json.dumps(me))
    deadline = time.monotonic() + timeout_s
    if launch.rank == 0:
        say(f"checkpoint: waiting for {launch.world_size} ranks")
        _gather(directory, "arrive", launch, timeout_s, check, "arrived")
        start_at = time.time() + START_AHEAD_S
        write_atomic(os.path.join(directory, "go.json"), json.dumps({"start_at": start_at}))
    else:
        start_at = _wait_go(directory, deadline, check)
    time.sleep(min(max(0.0, start_at - time.time()), START_AHEAD_S * 4))
    shard = os.path.join(directory, f"shard-{launch.rank}.bin")
    seconds, wall0, wall1 = write_file(shard, size, check)
    result = {**me, "bytes": size, "seconds": seconds, "start": wall0, "end": wall1}
    result["gib_per_s"] = gib_s(size, seconds)
    write_atomic(os.path.join(directory, f"result-{launch.rank}.json"), json.dumps(result))
    say(f"checkpoint: rank {launch.rank} on {node} wrote {size} B in {seconds:.3f} s")
    if launch.rank != 0:
        return None
    results = _gather(directory, "result", launch, timeout_s, check, "finished")
    ranks = [results[r] for r in sorted(results)]
    keep = {"rank": int, "node": str, "bytes": int, "seconds": float}
    for r in ranks:
        if not all(isinstance(r.get(k), t) for k, t in keep.items()):
            raise CordeeError(f"io bench: the result of rank {r.get('rank')} in {directory} is incomplete")
    for r in ranks:
        os.unlink(os.path.join(directory, f"shard-{r['rank']}.bin"))
    return summarize(ranks)


def summarize(ranks: list[dict]) -> dict:
    """Aggregate rate = all bytes over the slowest rank's time: the ranks start together (from
    go.json) and a checkpoint is done when its last shard is. Per-rank clocks only (monotonic):
    wall clocks of different nodes may disagree by more than a small shard takes."""
    slowest = max(ranks, key=lambda r: r["seconds"])
    total = sum(r["bytes"] for r in ranks)
    nodes = sorted({r["node"] for r in ranks})
    figure = {
        "name": f"checkpoint write ({len(ranks)} ranks)",
        "value": gib_s(total, slowest["seconds"]),
        "unit": "GiB/s",
        "ops": len(ranks),
        "seconds": slowest["seconds"],
        "bytes": total,
        "cache": "every rank writes its shard through the page cache; fsync timed",
    }
    keep = ("rank", "node", "bytes", "seconds", "gib_per_s")
    return {
        "figure": figure,
        "nodes": nodes,
        "slowest": {k: slowest[k] for k in keep},
        "ranks": [{k: r[k] for k in keep} for r in ranks],
    }


def checkpoint(directory: str, launch: LaunchEnv, size: int, bounded: iofs.Bounded, say) -> dict | None:
    """run_rank bounded by the phase timeout (the polling has its own deadline; the margin lets its
    message, which names the missing ranks, win over the generic one)."""
    limit = bounded.timeout_s
    return bounded(
        "checkpoint",
        lambda: run_rank(directory, launch, size, limit, bounded.check, say),
        timeout_s=limit * 3 + 10,
    )
