"""How long the preflight collector takes to gather every rank's results, and what that means for
a full Alps-size job (10,752 ranks: 2,688 GH200 nodes x 4 GPUs).

The collector is the real one (cordee.preflight.collector: one thread, one selector), in this
process. The ranks are real TCP connections from worker processes started with fork, each saying
hello (a plan of CHECKS checks), waiting for the start signal, then sending begin + result for
every check and end, with a heartbeat every 0.5 s throughout, and waiting for its exit code:

- "reporter": every rank is a real cordee Reporter (a heartbeat thread and a reader thread each);
- "lean": the same messages from one selector loop per worker process, so that thousands of ranks
  cost the load generator little and the collector is what is measured.

Measured from the start signal: the time until the collector has every rank's end ("gather") and
the messages it handled per second. Extrapolation to 10,752 ranks: a least-squares line through
the lean gather times (the collector handles every message of every rank in one thread, so its
work grows linearly with the ranks; the slope is the cost per rank), and the heartbeat load at
that size: the beats per second (sidechannel.heartbeat_s: every 0.5 s up to 4,000 ranks, then
less often) times the collector's CPU time per beat, measured while only heartbeats flow (the
ranks have ended and wait for their exit code). This machine (2
shared cores) runs the ranks too, so the figures are an upper bound for a collector with a core
of its own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import selectors
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "platform"))

from common import print_table, write_result  # noqa: E402

from cordee.preflight.collector import Collector  # noqa: E402
from cordee.preflight.results import Result  # noqa: E402
from cordee.preflight.sidechannel import HB_LINE, LineReader, Reporter, encode, heartbeat_s  # noqa: E402

CHECKS = 20
TARGET_RANKS = 10_752
PROCS = 8
LEAN_SIZES = (500, 1000, 2000, 4000)
REPORTER_SIZE = 1000
BEAT_WINDOW_S = 3.0
STALL_S = 5.0  # the default --stall-timeout


def _plan() -> list[str]:
    return [f"check.{i}" for i in range(CHECKS)]


def _result(name: str, rank: int) -> Result:
    return Result(name, "ok", f"nid{rank // 4:05d}", rank, value=1.0, unit="x", detail="fine")


# --- reporter mode: real Reporter objects, threads ---------------------------------------------


def _reporters(port: int, ranks: list[int], ready, go) -> None:
    n = len(ranks) * PROCS
    reporters = []
    for r in ranks:
        rep = Reporter(
            r, f"nid{r // 4:05d}", r % 4, stall_timeout_s=STALL_S, heartbeat_s=heartbeat_s(n, STALL_S)
        )
        rep.connect("127.0.0.1", port, time.monotonic() + 120, _plan())
        reporters.append(rep)
    ready.release()
    go.wait()
    codes = []

    def run(rep: Reporter) -> None:
        for name in _plan():
            rep.begin(name, 60.0)
            rep.result(name, [_result(name, rep.rank)])
        codes.append(rep.end())

    threads = [threading.Thread(target=run, args=(rep,)) for rep in reporters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os._exit(0 if len(codes) == len(ranks) and all(c == 0 for c in codes) else 1)


# --- lean mode: the same protocol from one selector loop per process ------------------------------


def _lean(port: int, ranks: list[int], ready, go) -> None:
    sel = selectors.DefaultSelector()
    socks = {}
    for r in ranks:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        hello = {"t": "hello", "rank": r, "node": f"nid{r // 4:05d}", "pid": os.getpid(), "local_rank": r % 4}
        s.sendall(encode({**hello, "checks": _plan()}))
        socks[r] = s
    ready.release()
    go.wait()
    for r, s in socks.items():  # the whole run's messages at once: the collector's worst burst
        msgs = []
        for name in _plan():
            msgs.append(encode({"t": "begin", "check": name, "timeout_s": 60.0}))
            msgs.append(encode({"t": "result", "check": name, "results": [_result(name, r).as_dict()]}))
        s.sendall(b"".join(msgs) + encode({"t": "end"}))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, (r, LineReader(1 << 16)))
    done: dict[int, int] = {}
    every = heartbeat_s(len(ranks) * PROCS, STALL_S)
    beat = time.monotonic() + every
    while len(done) < len(socks):
        for key, _ in sel.select(0.1):
            r, reader = key.data
            data = key.fileobj.recv(1 << 16)
            if not data:
                sel.unregister(key.fileobj)
                done.setdefault(r, 3)
                continue
            for msg in reader.feed(data):
                if msg["t"] in ("done", "abort"):
                    done[r] = msg.get("code", 3)
        if time.monotonic() >= beat:
            beat += every
            for r, s in socks.items():
                if r not in done:
                    try:
                        s.send(HB_LINE + b"\n")
                    except OSError:
                        pass
    os._exit(0 if all(c == 0 for c in done.values()) else 1)


def gather(n: int, mode: str) -> dict:
    collector = Collector(n, stall_timeout_s=STALL_S, timeout_s=600.0, host="127.0.0.1")
    port = collector.start()
    ctx = mp.get_context("fork")
    ready, go = ctx.Semaphore(0), ctx.Event()
    target = _reporters if mode == "reporter" else _lean
    t0 = time.perf_counter()
    procs = [
        ctx.Process(target=target, args=(port, list(range(i, n, PROCS)), ready, go)) for i in range(PROCS)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    connected = time.perf_counter() - t0
    t1 = time.perf_counter()
    go.set()
    outcome = collector.wait()
    gathered = time.perf_counter() - t1
    beat_cpu = _heartbeat_cpu(n) if mode == "lean" else None
    collector.finish(0)
    for p in procs:
        p.join(120)
    assert not outcome.errors, outcome.errors[:3]
    assert len(outcome.results) == n * CHECKS
    messages = n * (2 * CHECKS + 1)  # begin + result per check, end; heartbeats come on top
    return {
        "mode": mode,
        "ranks": n,
        "connect_s": round(connected, 3),
        "gather_s": round(gathered, 3),
        "messages": messages,
        "messages_per_s": round(messages / gathered),
        "ranks_all_got_exit_code_0": all(p.exitcode == 0 for p in procs),
        "heartbeat_cpu_us": beat_cpu,
    }


def _heartbeat_cpu(n: int) -> float:
    """CPU time of this process per rank heartbeat while every rank only beats (they have sent
    end and wait for their code): the collector's cost of one beat, its own beats to the ranks
    included. This process does nothing else meanwhile."""
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    time.sleep(BEAT_WINDOW_S)
    after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return round(cpu / (n * elapsed / heartbeat_s(n, STALL_S)) * 1e6, 2)


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, LEAN_SIZES)), help="lean mode rank counts")
    ap.add_argument("--reporters", type=int, default=REPORTER_SIZE, help="reporter mode rank count (0: skip)")
    args = ap.parse_args()
    rows = [gather(int(n), "lean") for n in args.sizes.split(",")]
    if args.reporters:
        rows.append(gather(args.reporters, "reporter"))
    lean = [r for r in rows if r["mode"] == "lean"]
    a, b = fit([(r["ranks"], r["gather_s"]) for r in lean])
    beat_us = max(r["heartbeat_cpu_us"] for r in lean)
    extrapolated = {
        "ranks": TARGET_RANKS,
        "method": "least-squares line through the lean gather_s at the measured rank counts",
        "intercept_s": round(a, 4),
        "per_rank_ms": round(b * 1e3, 4),
        "gather_s": round(a + b * TARGET_RANKS, 2),
        "heartbeat_interval_s": round(heartbeat_s(TARGET_RANKS, STALL_S), 3),
        "heartbeats_per_s": round(TARGET_RANKS / heartbeat_s(TARGET_RANKS, STALL_S)),
        "heartbeat_cpu_us": beat_us,  # the highest measured
        "heartbeat_load": round(TARGET_RANKS / heartbeat_s(TARGET_RANKS, STALL_S) * beat_us / 1e6, 3),
    }
    print_table(
        f"preflight gather: N ranks -> one collector ({CHECKS} checks each, {PROCS} worker processes)",
        [(r["mode"], r["ranks"], r["connect_s"], r["gather_s"], r["messages_per_s"]) for r in rows],
        ("mode", "ranks", "connect s", "gather s", "messages/s"),
    )
    load = extrapolated["heartbeat_load"] * 100
    print(
        f"\nextrapolated to {TARGET_RANKS} ranks: gather {extrapolated['gather_s']} s "
        f"({extrapolated['per_rank_ms']} ms per rank); heartbeats {load:.0f}% of one core"
    )
    path = write_result("preflight_gather", {"runs": rows, "extrapolated": extrapolated, "checks": CHECKS})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
