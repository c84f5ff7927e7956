"""The preflight side channel, rank side: a TCP connection to the collector that carries results
and heartbeats, and still works while the rank is stuck in a collective.

Every rank (rank 0 too) connects to the collector and speaks JSON lines:

    rank -> collector   {"t": "hello", "rank", "node", "pid", "local_rank", "checks": [names]}
                        {"t": "begin", "check", "timeout_s"}    a check starts
                        {"t": "result", "check", "results": [Result.as_dict()...]}  it ended
                        {"t": "hb"}                             every heartbeat_s(), from a thread
                        {"t": "end"}                            nothing more to run
    collector -> rank   {"t": "welcome", "who", "node", "pid"}  who collects
                        {"t": "hb"}                             every heartbeat_s() x 2
                        {"t": "abort", "code", "detail", "kill": [[node, pid]...]}
                        {"t": "done", "code"}                   the run's exit code

A rank blocked in a collective releases the GIL, so its heartbeat thread still beats; a rank that
was stopped (SIGSTOP) or killed does not, and the collector names it. Lines are bounded both ways.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from cordee.errors import EXIT_UNKNOWN, CordeeError, one_line
from cordee.process import exit_now

HEARTBEAT_S = 0.5  # rank -> collector, in jobs of up to BEATS_PER_S x HEARTBEAT_S = 4,000 ranks
BEATS_PER_S = 8000  # the collector's budget; larger jobs beat less often (heartbeat_s)
MAX_LINE_UP = 4 << 20  # bytes of one rank -> collector line (sweep rows for the plot ride along)
MAX_LINE_DOWN = 64 << 10  # collector -> rank
CONNECT_RETRY_S = 0.2
HB_LINE = b'{"t":"hb"}'


class PreflightError(CordeeError):
    """The run could not finish: a rank or the collector died, stalled or timed out. Exit 3."""

    exit_code = EXIT_UNKNOWN


def heartbeat_s(world_size: int, stall_timeout_s: float) -> float:
    """A rank's heartbeat interval: HEARTBEAT_S, longer in jobs of more than BEATS_PER_S x
    HEARTBEAT_S ranks (the collector handles every beat in one thread: about 25 us each,
    bench_preflight_gather), never more than a quarter of the stall timeout."""
    return min(max(HEARTBEAT_S, world_size / BEATS_PER_S), stall_timeout_s / 4)


def encode(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class LineReader:
    """Splits a byte stream into JSON messages; a line over `limit` bytes is a protocol error."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        self.buf += data
        out = []
        while (nl := self.buf.find(b"\n")) >= 0:
            line = bytes(self.buf[:nl])
            del self.buf[: nl + 1]
            if line == HB_LINE:  # most of the traffic: no JSON parse for it
                out.append({"t": "hb"})
            elif line.strip():
                out.append(decode(line))
        if len(self.buf) > self.limit:
            raise ValueError(f"a message longer than {self.limit} bytes")
        return out


def decode(line: bytes) -> dict:
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"a message that is not JSON ({e})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ValueError("a message without a type")
    return msg


def _say(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(one_line(line) + "\n")
        sys.stderr.flush()


def kill_local(targets, node: str, say: Callable[[str], None] = _say) -> None:
    """SIGKILL the (node, pid) targets that run on this node (not this process): a stopped rank
    cannot act on an abort, and srun waits for every task of the step."""
    for target_node, pid in targets:
        if target_node == node and isinstance(pid, int) and pid > 1 and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                say(f"cordee preflight: {node}: killed unresponsive pid {pid}")


class Reporter:
    """One rank's end of the side channel. Threads: a heartbeat (also watches the collector) and a
    reader (abort / done). `on_abort(msg)` runs in the reader thread; by default it kills the named
    processes of this node and exits 3 at once."""

    def __init__(
        self,
        rank: int,
        node: str,
        local_rank: int,
        *,
        stall_timeout_s: float,
        on_abort: Callable[[dict], None] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.rank, self.node, self.local_rank = rank, node, local_rank
        self.stall_timeout_s = stall_timeout_s
        self.heartbeat_s = heartbeat_s
        self.on_abort = on_abort or self._abort_and_exit
        self.sock: socket.socket | None = None
        self.collector = "the collector"
        self.collector_at: tuple[str, int] | None = None  # (node, pid) once welcomed
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._last_heard = time.monotonic()
        self.code: int | None = None
        self.aborted = False  # the collector ended the run: it reports, nothing left to say

    # -- connecting
    def connect(self, host: str, port: int, deadline: float, plan: list[str]) -> None:
        """Connect (retrying until the monotonic `deadline`: rank 0 may still be starting), say
        hello with this rank's plan, start the threads. PreflightError when it cannot."""
        last = ""
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=max(0.5, self.stall_timeout_s))
                break
            except OSError as e:
                last = str(e) or type(e).__name__
            if time.monotonic() + CONNECT_RETRY_S > deadline:
                raise PreflightError(
                    f"rank {self.rank} on {self.node}: cannot reach the preflight collector at "
                    f"{host}:{port}: {last}"
                )
            time.sleep(CONNECT_RETRY_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = {"t": "hello", "rank": self.rank, "node": self.node, "pid": os.getpid()}
        self.send({**hello, "local_rank": self.local_rank, "checks": plan})
        self._last_heard = time.monotonic()
        for target, name in ((self._beat, "hb"), (self._read, "reader")):
            threading.Thread(target=target, name=f"preflight-{name}", daemon=True).start()

    # -- messages
    def send(self, msg: dict) -> None:
        self._send_bytes(encode(msg))

    def _send_bytes(self, data: bytes) -> None:
        with self._send_lock:
            if self.sock is None:
                return
            try:
                self.sock.sendall(data)
            except OSError as e:  # the reader names the lost collector; the sender must not hang
                self._lost(f"cannot send to {self.collector}: {e}")

    def begin(self, check: str, timeout_s: float) -> None:
        self.send({"t": "begin", "check": check, "timeout_s": timeout_s})

    def result(self, check: str, results: list) -> None:
        self.send({"t": "result", "check": check, "results": [r.as_dict() for r in results]})

    def end(self) -> int:
        """Say this rank is finished; wait for the run's exit code (the collector sends it once
        every rank has ended). A lost collector ends the process with 3 meanwhile."""
        self.send({"t": "end"})
        self._done.wait()
        return EXIT_UNKNOWN if self.code is None else self.code

    def close(self) -> None:
        self._stop.set()
        with self._send_lock:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.close()
                self.sock = None

    # -- threads
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            silent = time.monotonic() - self._last_heard
            if silent > self.stall_timeout_s and not self._done.is_set():
                self._lost(f"{self.collector} stopped responding (no heartbeat for {silent:.1f} s)")
                return
            self._send_bytes(HB_LINE + b"\n")

    def _read(self) -> None:
        reader = LineReader(MAX_LINE_DOWN)
        sock = self.sock
        while not self._stop.is_set() and sock is not None:
            try:
                ready, _, _ = select.select([sock], [], [], 0.25)
                if not ready:
                    continue
                data = sock.recv(65536)
            except (OSError, ValueError) as e:
                return self._lost(f"connection to {self.collector} failed: {e}")
            if not data:
                if not self._done.is_set():
                    self._lost(f"{self.collector} closed the connection")
                return
            self._last_heard = time.monotonic()
            try:
                messages = reader.feed(data)
            except ValueError as e:
                return self._lost(f"{self.collector} sent {e}")
            for msg in messages:
                self._handle(msg)

    def _handle(self, msg: dict) -> None:
        kind = msg["t"]
        if kind == "welcome":
            node, pid = str(msg.get("node", "?")), msg.get("pid")
            who = str(msg.get("who", "collector"))
            self.collector = f"the collector ({who} on {node}, pid {pid})"
            if who.startswith("rank "):  # a stopped rank 0 would hold srun forever: killed if local
                self.collector_at = (node, pid)
        elif kind == "done":
            code = msg.get("code")
            self.code = code if isinstance(code, int) and 0 <= code <= 3 else EXIT_UNKNOWN
            self._done.set()
            self._stop.set()
        elif kind == "abort":
            self.aborted = True
            self._stop.set()
            self.on_abort(msg)

    def _abort_and_exit(self, msg: dict) -> None:
        kill_local([tuple(t) for t in msg.get("kill", []) if isinstance(t, list) and len(t) == 2], self.node)
        exit_now(EXIT_UNKNOWN)

    def _lost(self, why: str) -> None:
        """The collector is gone: say so once, kill it if it is a stopped process on this node
        (srun waits for it), exit 3."""
        if self._done.is_set() or self.aborted:
            return
        self._stop.set()
        _say(f"cordee preflight: rank {self.rank} on {self.node}: {why}; exiting with 3")
        if self.collector_at is not None:
            kill_local([self.collector_at], self.node)
        exit_now(EXIT_UNKNOWN)
