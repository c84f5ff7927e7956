"""The preflight side channel, collector side: one thread, one selector, every rank's connection.

It gathers results, prints progress through a callback, and ends the run when something is wrong:
a rank whose connection drops before "end" (died), whose heartbeats stop for the stall timeout
(stalled), whose check runs past its timeout, a rank that never connects, or the overall timeout.
Then it records an error Result naming rank, node and the check in progress and, once the caller
has written its reports (finish), tells every rank to exit 3, naming the stalled processes that
ranks on their node must kill (a stopped process cannot act on anything, and srun waits for it).
Protocol: see sidechannel.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from cordee.errors import InputError, shown
from cordee.preflight.results import Result
from cordee.preflight.sidechannel import HB_LINE, MAX_LINE_UP, LineReader, encode, heartbeat_s

CONNECT_WINDOW_S = 30.0  # every rank must have said hello by then (they connect before importing torch)
CHECK_EVERY_S = 0.2  # how often deadlines are looked at
FLUSH_S = 5.0  # finish(): how long the last messages may take to leave (slow readers at scale)
NAMED_MAX = 64  # errors naming single ranks; the rest are counted in one line


@dataclass(eq=False)
class Peer:
    """One connection; a rank once it said hello."""

    sock: socket.socket
    addr: str
    reader: LineReader = field(default_factory=lambda: LineReader(MAX_LINE_UP))
    outbox: bytearray = field(default_factory=bytearray)
    rank: int | None = None
    node: str = ""
    pid: int | None = None
    local_rank: int | None = None
    plan: tuple[str, ...] = ()
    last_seen: float = 0.0
    check: str | None = None  # in progress
    started: float = 0.0
    timeout_s: float = 0.0
    last_check: str | None = None
    ended: bool = False
    gone: bool = False

    @property
    def who(self) -> str:
        return f"rank {self.rank} on {self.node}"

    def where(self) -> str:
        if self.check:
            return f"during {self.check}"
        return f"after {self.last_check}" if self.last_check else "before its first check"


class Outcome(NamedTuple):
    results: list[Result]  # as the ranks sent them
    errors: list[Result]  # why the run was aborted ([] when it was not)
    ranks: dict[int, Peer]  # rank -> what it said in its hello


class Collector:
    """Start with start() (returns the port), wait() for the outcome, finish(code) to send every
    rank its exit code and close. Callbacks run in the collector thread."""

    def __init__(
        self,
        world_size: int,
        *,
        stall_timeout_s: float,
        timeout_s: float,
        host: str = "",
        port: int = 0,
        who: str = "collector",
        node: str = "",
        connect_window_s: float = CONNECT_WINDOW_S,
        on_check_done: Callable[[str, list[Result]], None] | None = None,
        watch: Callable[[], list[Result]] | None = None,
        exit_info: Callable[[int], str | None] | None = None,
    ) -> None:
        self.world_size = world_size
        self.stall_timeout_s, self.timeout_s = stall_timeout_s, timeout_s
        self.connect_window_s = min(connect_window_s, timeout_s)
        self.beat_s = 2 * heartbeat_s(world_size, stall_timeout_s)  # to every rank: half as often
        self.host, self.port, self.who, self.node = host, port, who, node or socket.gethostname()
        self.on_check_done, self.watch, self.exit_info = on_check_done, watch, exit_info
        self.ranks: dict[int, Peer] = {}
        self.results: list[Result] = []
        self.errors: list[Result] = []
        self._by_check: dict[str, list[Result]] = {}
        self._reported: dict[str, int] = {}
        self._announced: set[str] = set()
        self._planned: Counter[str] = Counter()  # check -> how many ranks will run it
        self._ended = 0
        self._outside: list[Result] = []  # abort requests from other threads
        self._lock = threading.Lock()
        self._outcome = threading.Event()
        self._finish_code: int | None = None
        self._kill: list[list] = []  # [node, pid] of stalled ranks, for the ranks on their nodes
        self._closed = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self.started = 0.0

    # -- public
    def start(self) -> int:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((self.host, self.port))
            lsock.listen(min(4096, max(128, self.world_size)))
        except OSError:
            lsock.close()
            raise
        lsock.setblocking(False)
        self._listener = lsock
        self.port = lsock.getsockname()[1]
        self._sel.register(lsock, selectors.EVENT_READ, None)
        self.started = time.monotonic()
        threading.Thread(target=self._loop, name="preflight-collector", daemon=True).start()
        return self.port

    def wait(self) -> Outcome:
        self._outcome.wait()
        return Outcome(list(self.results), list(self.errors), dict(self.ranks))

    @property
    def stalled(self) -> list[tuple[str, int]]:
        """(node, pid) of the ranks that stopped responding (after an abort)."""
        return [(node, pid) for node, pid in self._kill]

    def abort(self, errors: list[Result]) -> None:
        """End the run from another thread (a child that exited, an interrupt)."""
        with self._lock:
            self._outside.extend(errors)

    def finish(self, code: int) -> None:
        """Tell every rank still connected how the run ended: its exit code, or (after an abort)
        to exit 3, naming the stalled processes to kill. Flush, close (blocks until closed).
        The caller writes its reports first: under srun --kill-on-bad-exit, the first rank to exit
        non-zero gets the others killed."""
        self._finish_code = code
        self._closed.wait(FLUSH_S + 5)

    # -- the loop
    def _loop(self) -> None:
        try:
            self._serve()
        except Exception as e:  # noqa: BLE001 - a bug here must end the run, not hang wait()
            why = f"the collector on {self.node} failed: {type(e).__name__}: {e}"
            self._abort([Result("preflight", "error", self.node, detail=why[:500])])
        finally:
            for p in list(self.ranks.values()):
                self._close(p)
            with contextlib.suppress(OSError):
                self._listener.close()
            self._sel.close()
            self._outcome.set()
            self._closed.set()

    def _serve(self) -> None:
        next_beat = next_check = time.monotonic()
        finish_by = None
        while True:
            for key, mask in self._sel.select(0.1):
                if key.data is None:
                    self._accept()
                else:
                    self._io(key.data, mask)
            now = time.monotonic()
            if self._finish_code is not None and finish_by is None:
                finish_by = now + FLUSH_S
                self._broadcast(self._last_word())
            if finish_by is not None:
                pending = any(p.outbox for p in self._live())
                if not pending or now > finish_by:
                    return
                continue
            if now >= next_check and not self._outcome.is_set():
                next_check = now + CHECK_EVERY_S
                self._look(now)
            if now >= next_beat:
                next_beat = now + self.beat_s
                for p in self._live():
                    if not p.outbox:
                        self._send(p, HB_LINE + b"\n")

    def _live(self):
        return [p for p in self.ranks.values() if not p.gone]

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: the rank retries
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = Peer(sock, f"{addr[0]}:{addr[1]}", last_seen=time.monotonic())
            self._sel.register(sock, selectors.EVENT_READ, peer)

    def _io(self, p: Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(p)
        if not mask & selectors.EVENT_READ or p.gone:
            return
        try:
            data = p.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self._dropped(p)
        p.last_seen = time.monotonic()
        try:
            for msg in p.reader.feed(data):
                self._handle(p, msg)
        except (ValueError, InputError) as e:
            if p.rank is None:  # not one of ours (a port scan): just close it
                return self._close(p)
            self._fail(p, f"{p.who} sent {e}")

    def _handle(self, p: Peer, msg: dict) -> None:
        kind = msg["t"]
        if p.rank is None:
            if kind != "hello":
                raise ValueError(f"{shown(kind)} before hello")
            return self._hello(p, msg)
        if kind == "hb":
            return
        if kind == "begin":
            p.check, p.started = str(msg.get("check", "?")), time.monotonic()
            timeout = msg.get("timeout_s")
            p.timeout_s = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 0.0
        elif kind == "result":
            check, items = msg.get("check"), msg.get("results")
            if not isinstance(check, str) or not isinstance(items, list):
                raise ValueError("a result message without check and results")
            got = [Result.from_dict(d) for d in items]
            p.check, p.last_check = None, check
            if not self._outcome.is_set():  # after an abort: the cascade (peers' broken collectives)
                self._record(check, got)
        elif kind == "end":
            if not p.ended:
                p.ended = True
                self._ended += 1
            if self._ended == self.world_size:
                self._outcome.set()
        else:
            raise ValueError(f"an unknown message type {shown(kind)}")

    def _hello(self, p: Peer, msg: dict) -> None:
        rank, node, pid, local, plan = (msg.get(k) for k in ("rank", "node", "pid", "local_rank", "checks"))
        if not (isinstance(rank, int) and 0 <= rank < self.world_size):
            raise ValueError(f"hello with rank {shown(rank)} (world size {self.world_size})")
        if rank in self.ranks:
            raise ValueError(f"a second hello for rank {rank}")
        if not (isinstance(node, str) and 0 < len(node) <= 255 and isinstance(plan, list)):
            raise ValueError("hello without node or checks")
        p.rank, p.node, p.plan = rank, node, tuple(str(c) for c in plan)
        p.pid = pid if isinstance(pid, int) else None
        p.local_rank = local if isinstance(local, int) else None
        self.ranks[rank] = p
        self._planned.update(set(p.plan))
        self._send(p, encode({"t": "welcome", "who": self.who, "node": self.node, "pid": os.getpid()}))
        if len(self.ranks) == self.world_size:
            for check in list(self._by_check):
                self._announce(check)

    def _record(self, check: str, got: list[Result]) -> None:
        self.results.extend(got)
        self._by_check.setdefault(check, []).extend(got)
        self._reported[check] = self._reported.get(check, 0) + 1
        if len(self.ranks) == self.world_size:
            self._announce(check)

    def _announce(self, check: str) -> None:
        if check not in self._announced and self._reported.get(check, 0) >= self._planned[check]:
            self._announced.add(check)
            if self.on_check_done is not None:
                try:
                    self.on_check_done(check, self._by_check[check])
                except Exception:  # noqa: BLE001 - a progress line must never end the run
                    pass

    # -- ending the run
    def _look(self, now: float) -> None:
        errors: list[Result] = []
        with self._lock:
            errors, self._outside = self._outside, []
        if self.watch is not None:
            errors += self.watch()
        elapsed = now - self.started
        live = [p for p in self.ranks.values() if not p.ended]
        for p in live:
            silent = now - p.last_seen
            if silent > self.stall_timeout_s and not _unread(p.sock):  # unread: we are the slow one
                why = f"stopped responding (no heartbeat for {silent:.1f} s) {p.where()}"
                errors.append(self._error(p, f"{p.who} {why}", kill=True))
            elif p.check and p.timeout_s and now - p.started > p.timeout_s:
                why = f"check {p.check} did not finish within its timeout of {p.timeout_s:g} s"
                errors.append(self._error(p, f"{p.who}: {why}"))
            elif elapsed > self.timeout_s:
                why = f"the run did not finish within its timeout of {self.timeout_s:g} s"
                errors.append(self._error(p, f"{why}: {p.who} was still running {p.where()}"))
        if elapsed > self.connect_window_s and len(self.ranks) < self.world_size:
            missing = [r for r in range(self.world_size) if r not in self.ranks]
            errors += [
                Result(
                    "preflight",
                    "error",
                    rank=r,
                    detail=f"rank {r} did not connect within "
                    f"{self.connect_window_s:g} s (it never started, or cannot reach {self.node})",
                )
                for r in missing[:NAMED_MAX]
            ]
        if errors:
            self._abort(errors)

    def _error(self, p: Peer, detail: str, kill: bool = False) -> Result:
        data = {"pid": p.pid, "kill": kill} if kill else None
        return Result(p.check or "preflight", "error", node=p.node, rank=p.rank, detail=detail, data=data)

    def _dropped(self, p: Peer) -> None:
        self._close(p)
        if p.rank is None or p.ended or self._outcome.is_set():
            return
        how = self.exit_info(p.rank) if self.exit_info is not None else None
        why = f"{how} " if how else "lost its connection (exited or was killed) "
        self._fail(p, f"{p.who} {why}{p.where()}")

    def _fail(self, p: Peer, detail: str) -> None:
        self._abort([Result(p.check or "preflight", "error", node=p.node, rank=p.rank, detail=detail)])

    def _abort(self, errors: list[Result]) -> None:
        """Record why the run ends; the ranks are told in finish(), after the reports are written."""
        if self._outcome.is_set():
            return
        named = errors[:NAMED_MAX]
        if len(errors) > NAMED_MAX:
            more = Result("preflight", "error", detail=f"... and {len(errors) - NAMED_MAX} more ranks")
            named.append(more)
        self._kill = [[e.node, e.data["pid"]] for e in errors if e.data and e.data.get("kill")]
        self.errors = named
        self._outcome.set()

    def _last_word(self) -> dict:
        if not self.errors:
            return {"t": "done", "code": self._finish_code}
        return {"t": "abort", "code": 3, "detail": self.errors[0].detail[:2000], "kill": self._kill[:4096]}

    # -- sending
    def _broadcast(self, msg: dict) -> None:
        data = encode(msg)
        for p in self._live():
            self._send(p, data)

    def _send(self, p: Peer, data: bytes) -> None:
        p.outbox += data
        self._flush(p)

    def _flush(self, p: Peer) -> None:
        if p.gone:
            return
        try:
            sent = p.sock.send(p.outbox) if p.outbox else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            p.outbox.clear()
            return
        del p.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if p.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(p.sock, events, p)

    def _close(self, p: Peer) -> None:
        if p.gone:
            return
        p.gone = True
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(p.sock)
        with contextlib.suppress(OSError):
            p.sock.close()


def _unread(sock: socket.socket) -> bool:
    """Bytes (or an EOF) wait in the socket: the rank spoke and this thread has not read it yet."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": an EOF, reported by the next read
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # an error to read: the next recv reports it (a dropped connection)
