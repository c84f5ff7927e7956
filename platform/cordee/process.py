"""Starting and stopping child processes: the one place in cordee that does it.

Every child cordee waits for runs here, under one set of rules:

- It starts isolated (`isolate`): by default it leads a session of its own ("session"), so a
  signal to its process group reaches everything it started, and a terminal's Ctrl-C does not
  reach it behind cordee's back. "group" keeps cordee's session and terminal but gives the child
  a process group (launched ranks); "shared" leaves it in cordee's own group, in the foreground of
  the terminal (an interactive `podman run -it`): then only the child itself is ever signalled.
- At the deadline (`timeout`), the whole group gets SIGTERM, and SIGKILL `grace` seconds later if
  the child is still there (grace 0: SIGKILL at once). `timed_out` says the child itself was still
  running at the deadline.
- Its stdout and stderr are read as they come, so a child that floods them never blocks: kept
  (only the last `keep` bytes: memory stays bounded) or passed on line by line to a callback. The
  reading is bounded too: once the child has ended, whatever still holds the pipes (a helper it
  forked, a daemon in a session of its own) gets `drain` seconds to close them, then the pipes are
  abandoned; a child that closes its pipes and keeps running still ends at the deadline.
- When the run returns, nothing is left of the child's process group: helpers that outlived it
  get SIGKILL. (Daemons that must survive leave the group with setsid, as they all do.) The group
  is signalled before the child is reaped, so its id cannot have been reused meanwhile.
- If cordee itself is interrupted while waiting (Ctrl-C, an exception from a line callback), the
  child is stopped the same way (TERM, KILL after the grace) before the exception goes on.

`run` is one child, `pipeline` is `source | sink` under one deadline, `start` and `stop` are the
pieces for children that cordee supervises itself (the ranks of `cordee launch`).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Literal

GRACE_S = 10.0  # SIGTERM, then SIGKILL after this many seconds
DRAIN_S = 5.0  # after the child ended: how long its pipes may stay open (held by a helper)
KEEP_BYTES = 16 * 2**20  # captured output: the last 16 MiB of each stream are kept
LINE_MAX = 2**20  # streamed output: a longer line is passed on in pieces
POLL_S = 0.05  # where the kernel has no pidfd: how often a child is checked
_CHUNK = 2**16

# What to do with a child's stdin/stdout/stderr (as for subprocess.Popen, plus a callable that
# receives the output line by line, each line with its "\n" except perhaps the last).
CAPTURE = subprocess.PIPE  # read and keep the tail (Result.stdout / Result.stderr)
INHERIT = None  # cordee's own
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT  # stderr only: into stdout, handled as stdout is

Popen = subprocess.Popen  # what start() returns
Isolation = Literal["session", "group", "shared"]
Output = int | IO | Callable[[str], object] | None  # CAPTURE, INHERIT, DEVNULL, STDOUT, fd, file, callable


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    pid: int  # also its process group id, unless started with isolate="shared"
    # negative -S: ended by signal S; None: still not gone after SIGKILL (stuck in the kernel)
    returncode: int | None
    timed_out: bool  # the child itself was still running at the deadline, and was stopped
    stdout: str  # the captured tail, decoded with errors="replace"; "" when not captured
    stderr: str
    duration: float  # seconds, from the start to the end of the run (draining included)

    @property
    def signal(self) -> str | None:
        """The signal that ended the child ("SIGSEGV"), or None when it exited by itself."""
        return signal_name(self.returncode) if self.returncode is not None else None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def signal_name(returncode: int) -> str | None:
    """ "SIGSEGV" for a return code of -11; None for a return code >= 0 (an exit)."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def exit_now(code: int) -> None:
    """Flush stdout and stderr, then leave with `code` at once, from any thread and past the
    interpreter's teardown: a process whose torch process group broke (a peer lost, a collective
    stuck in the main thread) would hang there, or gloo's threads abort it ("terminate called
    without an active exception", exit 134) and hide the real code."""
    import contextlib
    import sys

    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def exit_code_of(returncode: int) -> int:
    """Shell convention: a child killed by signal S exits 128+S."""
    return 128 - returncode if returncode < 0 else returncode


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False when the group is gone (or nothing left in it
    may be signalled)."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


# --- starting -------------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl():
    """libc's prctl, resolved in the parent: nothing is imported or loaded after fork."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def _child_setup(die_with_parent: bool, cpus: frozenset[int] | None) -> Callable[[], None] | None:
    if not die_with_parent and not cpus:
        return None
    parent = os.getpid()
    prctl = _prctl() if die_with_parent else None

    def setup() -> None:  # runs in the child between fork and exec: no imports, no allocation
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # cordee died before prctl took effect
                os._exit(1)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin=INHERIT,
    stdout=INHERIT,
    stderr=INHERIT,
    isolate: Isolation = "session",
    die_with_parent: bool = False,
    cpus: frozenset[int] | None = None,
) -> subprocess.Popen:
    """Start argv (stdin/stdout/stderr as for Popen). die_with_parent: the kernel sends the child
    SIGKILL when cordee dies, even of SIGKILL (PR_SET_PDEATHSIG; it fires when the thread that
    started the child ends: start from the main thread). cpus: the child's CPU affinity.
    Raises what Popen raises (FileNotFoundError for a missing program)."""
    where: dict = {}
    if isolate == "session":
        where["start_new_session"] = True
    elif isolate == "group":
        where["process_group"] = 0
    elif isolate != "shared":
        raise ValueError(f"isolate={isolate!r}: expected 'session', 'group' or 'shared'")
    return subprocess.Popen(
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_child_setup(die_with_parent, cpus),
        **where,
    )


# --- one child, watched -------------------------------------------------------------------------


class _Child:
    """A started child: its exit seen without reaping it (waitid WNOWAIT: until the end of the
    run its pid, and so its process group id, stay ours), and its stop sequence."""

    def __init__(self, proc: subprocess.Popen, group: bool) -> None:
        self.proc = proc
        self.group = group
        self.pidfd: int | None = None
        self.exited = proc.returncode is not None
        self.status: int | None = proc.returncode  # as a returncode, once exited
        self.stuck = False  # not gone `drain` seconds after SIGKILL: given up on
        self.stop_at: float | None = None  # when to start stopping it
        self.stop_is_timeout = False
        self.timed_out = False
        self.kill_at: float | None = None
        self.killed_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.exited or self.stuck

    def open_pidfd(self) -> int | None:
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # kernel before 5.3, or a sandbox refusing it
            self.pidfd = None
        return self.pidfd

    def check_exit(self) -> bool:
        if self.exited:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back: Popen reports 0
            info = None
            self.exited = True
        if info is not None:
            self.exited = True
            self.status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        return self.exited

    def send(self, sig: int) -> None:
        if self.exited:  # a zombie: its group may still have members
            if self.group:
                signal_group(self.proc.pid, sig)
            return
        if self.group:
            signal_group(self.proc.pid, sig)
        else:
            try:
                os.kill(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop_by(self, when: float, timeout: bool) -> None:
        """Start stopping it at `when` (at the latest)."""
        if self.kill_at is None and (self.stop_at is None or when < self.stop_at):
            self.stop_at, self.stop_is_timeout = when, timeout

    def tick(self, now: float, grace: float, drain: float) -> None:
        if self.ended:
            return
        if self.kill_at is None and self.stop_at is not None and now >= self.stop_at:
            self.timed_out = self.stop_is_timeout
            if grace > 0:
                self.send(signal.SIGTERM)
            self.kill_at = now + max(grace, 0.0)
        if self.kill_at is not None and self.killed_at is None and now >= self.kill_at:
            self.send(signal.SIGKILL)
            self.killed_at = now
        if self.killed_at is not None and now >= self.killed_at + drain:
            self.stuck = True

    def next_event(self) -> float | None:
        if self.ended:
            return None
        if self.kill_at is None:
            return self.stop_at
        if self.killed_at is None:
            return self.kill_at
        return None  # the stuck check: handled by the caller's drain bound

    def finish(self, drain: float) -> int | None:
        """Kill what is left of its group, reap it; its returncode (None: stuck)."""
        if self.group:
            signal_group(self.proc.pid, signal.SIGKILL)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.exited:
            self.proc.wait()
            return self.proc.returncode
        if self.stuck:  # given up on already: Popen reaps it if it ever goes
            return self.proc.poll()
        try:  # after SIGKILL: gone at once unless stuck in the kernel (a hung FUSE or NFS mount)
            return self.proc.wait(timeout=drain)
        except subprocess.TimeoutExpired:
            self.stuck = True
            return None


def _halt(children: Sequence[_Child], grace: float, on_kill=None) -> None:
    """SIGTERM to every child still running, SIGKILL to those still there after `grace`."""
    live = [c for c in children if not c.ended and not c.check_exit()]
    try:
        if grace > 0 and live:
            for c in live:
                c.send(signal.SIGTERM)
            end = time.monotonic() + grace
            while live:
                live = [c for c in live if not c.check_exit()]
                left = end - time.monotonic()
                if not live or left <= 0:
                    break
                time.sleep(min(POLL_S, left))
    finally:  # also on a second Ctrl-C during the grace
        for c in live:
            if not c.check_exit():
                if on_kill is not None:
                    on_kill(c.proc)
                c.send(signal.SIGKILL)


class _Reader:
    """One pipe from a child, read as it comes: the last `keep` bytes kept, or passed on line
    by line to `on_line`."""

    def __init__(self, file, keep: int, on_line: Callable[[str], object] | None) -> None:
        self.file = file
        self.fd = file.fileno()
        self.keep = max(0, keep)
        self.on_line = on_line
        self.buf = bytearray()  # the kept tail, or the partial line
        self.scanned = 0  # the partial line's length already searched for a newline
        self.open = True

    def feed(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.on_line is None:
            if len(buf) > 2 * self.keep + _CHUNK:
                del buf[: len(buf) - self.keep]
            return
        pos, n = 0, len(buf)
        while True:  # complete lines, and pieces of LINE_MAX bytes of an overlong one
            end = min(n, pos + LINE_MAX)
            nl = buf.find(b"\n", max(pos, self.scanned), end)
            if nl >= 0:
                end = nl + 1
            elif end - pos < LINE_MAX:
                break
            self.scanned = 0
            self._emit(buf[pos:end])
            pos = end
        del buf[:pos]
        self.scanned = len(buf)  # what is left holds no newline: not searched again

    def _emit(self, line: bytes | bytearray) -> None:
        self.on_line(line.decode(errors="replace"))

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        try:
            if self.on_line is not None and self.buf:
                line, self.buf = self.buf, bytearray()
                self._emit(line)
        finally:
            self.file.close()

    def text(self) -> str:
        if self.on_line is not None or not self.keep:
            return ""
        return bytes(self.buf[-self.keep :]).decode(errors="replace")


def _popen_output(spec, keep: int) -> tuple[object, Callable[[object], _Reader] | None]:
    """What Popen gets for an output spec, and how to read the pipe if there is one."""
    if callable(spec):
        return subprocess.PIPE, lambda f: _Reader(f, keep, spec)
    if spec == CAPTURE:
        return subprocess.PIPE, lambda f: _Reader(f, keep, None)
    return spec, None


def _watch(
    children: Sequence[_Child],
    readers: Sequence[_Reader],
    *,
    grace: float,
    drain: float,
    on_exit: Callable[[_Child, float], None] | None = None,
) -> None:
    """Read the pipes and run the stop sequences until every child has ended and its pipes are
    closed or have had `drain` seconds more."""
    sel = selectors.DefaultSelector()
    try:
        for r in readers:
            sel.register(r.fd, selectors.EVENT_READ, r)
        polling = False
        for c in children:
            if c.open_pidfd() is None:
                polling = True
            else:
                sel.register(c.pidfd, selectors.EVENT_READ, c)
        ended_at: float | None = None
        while True:
            now = time.monotonic()
            for c in children:
                if not c.exited and c.check_exit():
                    if c.pidfd is not None:
                        sel.unregister(c.pidfd)
                    if on_exit is not None:
                        on_exit(c, now)
            for c in children:
                c.tick(now, grace, drain)
            if all(c.ended for c in children):
                ended_at = now if ended_at is None else ended_at
                if not any(r.open for r in readers) or now >= ended_at + drain:
                    break
            else:
                ended_at = None
            wake = [t for t in (c.next_event() for c in children) if t is not None]
            wake += [c.killed_at + drain for c in children if c.killed_at is not None and not c.ended]
            if ended_at is not None:
                wake.append(ended_at + drain)
            wait = max(0.0, min(wake) - now) if wake else None
            if polling and any(not c.ended for c in children):
                wait = POLL_S if wait is None else min(wait, POLL_S)
            for key, _ in sel.select(wait):
                if isinstance(key.data, _Reader):
                    r = key.data
                    data = os.read(r.fd, _CHUNK)
                    if data:
                        r.feed(data)
                    else:  # EOF: every writer closed its end
                        sel.unregister(r.fd)
                        r.close()
    except BaseException:
        _halt(children, grace)
        raise
    finally:
        sel.close()


def _finish(children: Sequence[_Child], readers: Sequence[_Reader], drain: float) -> list[int | None]:
    try:
        for r in readers:  # still held by a helper: abandoned (it gets EPIPE, and SIGKILL below)
            r.close()
    finally:
        codes = [c.finish(drain) for c in children]
    return codes


def run(
    argv: Sequence[str],
    *,
    timeout: float | None,
    grace: float = GRACE_S,
    drain: float = DRAIN_S,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin=DEVNULL,
    stdout: Output = CAPTURE,
    stderr: Output = CAPTURE,
    keep: int = KEEP_BYTES,
    isolate: Isolation = "session",
) -> Result:
    """Run argv to its end or its deadline (`timeout` seconds; None: no deadline), under the rules
    of the module docstring. stdout/stderr: CAPTURE (the last `keep` bytes go into the Result),
    a callable (called with each line), STDOUT (stderr only), INHERIT, DEVNULL, or an fd or file.
    Raises what Popen raises when argv cannot be started (FileNotFoundError)."""
    t0 = time.monotonic()
    out_arg, out_reader = _popen_output(stdout, keep)
    err_arg, err_reader = _popen_output(stderr, keep)
    proc = start(argv, env=env, cwd=cwd, stdin=stdin, stdout=out_arg, stderr=err_arg, isolate=isolate)
    child = _Child(proc, group=isolate != "shared")
    if timeout is not None:
        child.stop_by(t0 + timeout, timeout=True)
    out = out_reader(proc.stdout) if out_reader else None
    err = err_reader(proc.stderr) if err_reader else None
    readers = [r for r in (out, err) if r is not None]
    try:
        _watch([child], readers, grace=grace, drain=drain)
    finally:
        (code,) = _finish([child], readers, drain)
    return _result(argv, child, code, out, err, time.monotonic() - t0)


def pipeline(
    source: Sequence[str],
    sink: Sequence[str],
    *,
    timeout: float | None,
    grace: float = GRACE_S,
    drain: float = DRAIN_S,
    linger: float | None = None,
    source_env: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    source_stderr: Output = CAPTURE,
    stdout: Output = CAPTURE,
    stderr: Output = CAPTURE,
    keep: int = KEEP_BYTES,
) -> tuple[Result, Result]:
    """`source | sink`, each in a session of its own, under one deadline; (source's, sink's)
    Result. The source's stdout goes to the sink only (cordee keeps no end of that pipe: a source
    writing to an ended sink gets SIGPIPE). When the sink fails, the source is stopped at once;
    when it succeeds, the source has `linger` seconds (default: `drain`) to end by itself (a
    sink that read to the end leaves a source that is finishing), then is stopped. A source that
    ends first leaves the sink to read to the end of its input."""
    linger = drain if linger is None else linger
    t0 = time.monotonic()
    src_err_arg, src_err_reader = _popen_output(source_stderr, keep)
    out_arg, out_reader = _popen_output(stdout, keep)
    err_arg, err_reader = _popen_output(stderr, keep)
    src_proc = start(
        source, env=source_env, cwd=cwd, stdin=DEVNULL, stdout=subprocess.PIPE, stderr=src_err_arg
    )
    src = _Child(src_proc, group=True)
    readers: list[_Reader] = []
    if src_err_reader:
        readers.append(src_err_reader(src_proc.stderr))
    try:
        snk_proc = start(sink, env=env, cwd=cwd, stdin=src_proc.stdout, stdout=out_arg, stderr=err_arg)
    except BaseException:
        try:
            _halt([src], grace)
        finally:
            src_proc.stdout.close()
            _finish([src], readers, drain)
        raise
    src_proc.stdout.close()
    snk = _Child(snk_proc, group=True)
    out = out_reader(snk_proc.stdout) if out_reader else None
    err = err_reader(snk_proc.stderr) if err_reader else None
    readers += [r for r in (out, err) if r is not None]
    if timeout is not None:
        src.stop_by(t0 + timeout, timeout=True)
        snk.stop_by(t0 + timeout, timeout=True)

    def sink_ended(c: _Child, now: float) -> None:
        if c is snk:
            src.stop_by(now if c.status != 0 else now + linger, timeout=False)

    try:
        _watch([src, snk], readers, grace=grace, drain=drain, on_exit=sink_ended)
    finally:
        src_code, snk_code = _finish([src, snk], readers, drain)
    duration = time.monotonic() - t0
    src_err = readers[0] if src_err_reader else None
    return (
        _result(source, src, src_code, None, src_err, duration),
        _result(sink, snk, snk_code, out, err, duration),
    )


def _result(
    argv: Sequence[str], child: _Child, code: int, out: _Reader | None, err: _Reader | None, duration: float
) -> Result:
    return Result(
        tuple(argv),
        child.proc.pid,
        code,
        child.timed_out,
        out.text() if out else "",
        err.text() if err else "",
        duration,
    )


# --- children supervised elsewhere ------------------------------------------------------------


def _leads_group(proc: subprocess.Popen) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except (ProcessLookupError, PermissionError):
        return False


def stop(
    procs: Sequence[subprocess.Popen],
    grace: float = GRACE_S,
    *,
    on_kill: Callable[[subprocess.Popen], object] | None = None,
    drain: float = DRAIN_S,
) -> None:
    """Stop children started with start() that are still running: SIGTERM to each one's process
    group (to the child alone when it leads none), SIGKILL to those still there after `grace`
    (on_kill(proc) just before), then SIGKILL to what is left of their groups; all reaped."""
    children = [_Child(p, group=_leads_group(p)) for p in procs if p.returncode is None]
    try:
        _halt(children, grace, on_kill)
    finally:
        for c in children:
            c.finish(drain)
