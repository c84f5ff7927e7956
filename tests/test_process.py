"""cordee.process against real children (python -c, sh): deadlines (TERM, then KILL after the
grace), bounded draining of pipes held by helpers, bounded capture of floods, line streaming,
pipelines, rank-style starts (PDEATHSIG, affinity) and stop(). Every test ends in seconds and
checks that nothing it started is left running."""

from __future__ import annotations

import os
import select
import signal
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from cordee import process

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """The live processes of process group pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z" and int(st[2]) == pgid:
                members.append(int(entry))
    return members


def assert_group_gone(pgid: int, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while group_members(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} outlived the run: {group_members(pgid)}"
        time.sleep(0.02)
    try:  # nothing in it may be signalled any more (zombies waiting for a reaper aside)
        os.killpg(pgid, 0)
    except ProcessLookupError:
        pass


def assert_gone(pid: int, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} is still running"
        time.sleep(0.02)


def _children() -> set[tuple[int, str]]:
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] == me:  # our child, running or not yet reaped
                found.add((int(entry), st[0]))
    return found


@pytest.fixture(autouse=True)
def no_children_left():
    # children that were there before (the session's Slurm daemons, say) are not this test's
    before = {pid for pid, _ in _children()}
    yield
    left = sorted((pid, state) for pid, state in _children() if pid not in before)
    assert not left, f"children of the test process left behind: {left}"


# --- one child ------------------------------------------------------------------------------------


def test_normal_exit_code_and_both_streams():
    r = process.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (r.returncode, r.timed_out, r.signal, r.ok) == (3, False, None, False)
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    assert r.argv == ("sh", "-c", "echo out; echo err >&2; exit 3") and 0 < r.duration < 5
    assert process.run(["true"], timeout=10).ok
    assert_group_gone(r.pid)


def test_missing_program_raises_as_popen_does():
    with pytest.raises(FileNotFoundError):
        process.run(["no-such-program-cordee-test"], timeout=10)


def test_bad_bytes_are_replaced():
    r = process.run(py("import os; os.write(1, b'ok \\xff\\xfe\\n')"), timeout=10)
    assert r.stdout == "ok \ufffd\ufffd\n"


def test_child_that_ignores_term_is_killed_after_the_grace():
    code = """
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(os.getpid(), flush=True)
        time.sleep(60)
    """
    t0 = time.monotonic()
    r = process.run(py(code), timeout=1.0, grace=0.5)
    elapsed = time.monotonic() - t0
    assert r.timed_out and r.returncode == -signal.SIGKILL and r.signal == "SIGKILL"
    assert 1.4 <= elapsed < 4, elapsed  # the deadline, then the whole grace, then SIGKILL
    assert int(r.stdout) == r.pid  # what it said before the deadline is kept
    assert process.exit_code_of(r.returncode) == 137
    assert_group_gone(r.pid)


def test_child_that_honours_term_ends_at_the_deadline():
    t0 = time.monotonic()
    r = process.run(["sleep", "60"], timeout=0.5, grace=30)
    assert r.timed_out and r.signal == "SIGTERM"
    assert time.monotonic() - t0 < 3  # the grace is a bound, not a wait


def test_grace_zero_kills_at_once():
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    t0 = time.monotonic()
    r = process.run(py(code), timeout=0.5, grace=0)
    assert r.timed_out and r.signal == "SIGKILL" and time.monotonic() - t0 < 3


def test_crash_by_signal_is_named(tmp_path):
    code = """
        import os, resource, signal
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), signal.SIGSEGV)
    """
    r = process.run(py(code), timeout=10, cwd=str(tmp_path))
    assert (r.returncode, r.signal, r.timed_out) == (-signal.SIGSEGV, "SIGSEGV", False)
    assert process.exit_code_of(r.returncode) == 139


def test_grandchildren_holding_the_pipes_do_not_hold_the_run():
    """The child exits at once; two helpers it forked keep its stdout/stderr open and run on. The
    drain ends after its bound, and the helpers go with the group."""
    code = """
        import os, sys, time
        for _ in range(2):
            if os.fork() == 0:
                os.write(1, b"helper %d\\n" % os.getpid())  # one write: the lines share the pipe
                time.sleep(60)
                os._exit(0)
        os.write(1, b"parent done\\n")
    """
    t0 = time.monotonic()
    r = process.run(py(code), timeout=30, drain=0.5)
    elapsed = time.monotonic() - t0
    assert (r.returncode, r.timed_out) == (0, False)
    assert 0.4 <= elapsed < 3, elapsed
    helpers = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("helper")]
    assert len(helpers) == 2 and "parent done" in r.stdout
    for pid in helpers:
        assert_gone(pid)
    assert_group_gone(r.pid)


def test_helper_in_a_session_of_its_own_cannot_hold_the_run():
    """A daemon (setsid) keeps the pipes: out of reach of the group, but the drain still ends."""
    code = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            print(os.getpid(), flush=True)
            time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
    """
    t0 = time.monotonic()
    r = process.run(py(code), timeout=30, drain=0.5)
    try:
        assert r.returncode == 0 and not r.timed_out
        assert time.monotonic() - t0 < 3
    finally:
        daemon = int(r.stdout.split()[0])
        os.kill(daemon, signal.SIGKILL)  # ours to clean up: it left cordee's reach on purpose
    assert_gone(daemon)


def test_child_that_closes_its_pipes_still_ends_at_the_deadline():
    code = """
        import os, time
        os.write(1, b"bye\\n")
        os.close(1); os.close(2)
        time.sleep(60)
    """
    t0 = time.monotonic()
    r = process.run(py(code), timeout=1.0, grace=0.5)
    assert r.timed_out and r.signal == "SIGTERM" and r.stdout == "bye\n"
    assert 0.9 < time.monotonic() - t0 < 3
    assert_group_gone(r.pid)


def test_flood_keeps_a_bounded_tail_without_deadlock():
    """300 MB on stdout and 30 MB on stderr, interleaved: both pipes are read as they fill (no
    deadlock), only the last `keep` bytes of each are kept, and memory stays bounded."""
    code = """
        import os
        block = b"x" * (1 << 20)
        for i in range(300):
            os.write(1, block)
            if i % 10 == 0:
                os.write(2, block)
        os.write(1, b"\\nEND OF OUT\\n")
        os.write(2, b"\\nEND OF ERR\\n")
    """
    keep = 1 << 20
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        r = process.run(py(code), timeout=60, keep=keep)
        elapsed = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.returncode == 0 and not r.timed_out
    assert len(r.stdout) == keep and r.stdout.endswith("x\nEND OF OUT\n")
    assert len(r.stderr) == keep and r.stderr.endswith("x\nEND OF ERR\n")
    assert peak < 8 * keep, f"peak {peak / 2**20:.1f} MiB for a tail of {keep / 2**20:.0f} MiB"
    assert elapsed < 30


def test_keep_zero_keeps_nothing():
    r = process.run(["sh", "-c", "echo a lot"], timeout=10, keep=0)
    assert r.returncode == 0 and r.stdout == ""


def test_streaming_lines_to_a_callback():
    lines: list[str] = []
    r = process.run(
        ["sh", "-c", "echo one; echo two >&2; printf 'three\\nno newline'"],
        timeout=10,
        stdout=lines.append,
        stderr=process.STDOUT,
    )
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    assert lines == ["one\n", "two\n", "three\n", "no newline"]


def test_streamed_overlong_line_comes_in_pieces(monkeypatch):
    monkeypatch.setattr(process, "LINE_MAX", 1000)
    pieces: list[str] = []
    r = process.run(
        py("import sys; sys.stdout.write('y' * 2500 + '\\nshort\\n')"), timeout=10, stdout=pieces.append
    )
    assert r.returncode == 0
    assert [len(p) for p in pieces] == [1000, 1000, 501, 6] and pieces[-1] == "short\n"
    assert "".join(pieces) == "y" * 2500 + "\nshort\n"


def test_a_failing_callback_stops_the_child():
    def explode(line: str) -> None:
        raise RuntimeError(f"callback failed on {line.strip()}")

    with pytest.raises(RuntimeError, match=r"callback failed on (\d+)") as info:
        process.run(["sh", "-c", "echo $$; exec sleep 60"], timeout=30, grace=0.5, stdout=explode)
    pid = int(info.value.args[0].split()[-1])
    assert_group_gone(pid)


def test_isolation_session_group_and_shared():
    probe = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    r = process.run(py(probe), timeout=10)
    pid, pgid, sid = map(int, r.stdout.split())
    assert pid == pgid == sid == r.pid  # leads its own session

    r = process.run(py(probe), timeout=10, isolate="group")
    pid, pgid, sid = map(int, r.stdout.split())
    assert pid == pgid and sid == os.getsid(0)  # own group, cordee's session (and terminal)

    r = process.run(py(probe), timeout=10, isolate="shared")
    pid, pgid, sid = map(int, r.stdout.split())
    assert pgid == os.getpgid(0) and sid == os.getsid(0)

    with pytest.raises(ValueError, match="isolate"):
        process.run(["true"], timeout=10, isolate="bogus")


def test_shared_group_child_alone_is_stopped():
    """isolate="shared": the child is in our own process group; the deadline must signal it, and
    only it."""
    t0 = time.monotonic()
    r = process.run(["sleep", "60"], timeout=0.5, grace=0.5, isolate="shared", stdout=process.DEVNULL)
    assert r.timed_out and r.signal == "SIGTERM" and time.monotonic() - t0 < 3
    assert_gone(r.pid)


def test_no_deadline_waits_for_the_end():
    r = process.run(["sh", "-c", "sleep 0.3; echo done"], timeout=None)
    assert r.ok and r.stdout == "done\n"


def test_without_pidfd_the_child_is_polled(monkeypatch):
    def refuse(pid, flags=0):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refuse)
    assert process.run(["sh", "-c", "sleep 0.1; exit 4"], timeout=10).returncode == 4
    t0 = time.monotonic()
    r = process.run(["sleep", "60"], timeout=0.3, grace=0.5, stdout=process.DEVNULL)
    assert r.timed_out and time.monotonic() - t0 < 3


def test_stdin_is_devnull_by_default_and_can_be_given(tmp_path):
    assert process.run(["cat"], timeout=10).stdout == ""
    src = tmp_path / "in.txt"
    src.write_text("from a file\n")
    with open(src) as f:
        assert process.run(["cat"], timeout=10, stdin=f).stdout == "from a file\n"


# --- helpers ----------------------------------------------------------------------------------------


def test_signal_name_and_exit_code_of():
    assert process.signal_name(-11) == "SIGSEGV" and process.signal_name(-9) == "SIGKILL"
    assert process.signal_name(0) is None and process.signal_name(3) is None
    assert process.signal_name(-200) == "signal 200"
    assert process.exit_code_of(-15) == 143 and process.exit_code_of(7) == 7 and process.exit_code_of(0) == 0


def test_signal_group_tolerates_gone_groups():
    r = process.run(["true"], timeout=10)
    assert process.signal_group(r.pid, signal.SIGTERM) is False  # gone: no error


# --- pipelines --------------------------------------------------------------------------------------


def test_pipeline_moves_the_data():
    src, snk = process.pipeline(["printf", "a\\nb\\n"], ["sort", "-r"], timeout=10)
    assert src.ok and snk.ok and snk.stdout == "b\na\n"


def test_pipeline_failing_source():
    src, snk = process.pipeline(
        ["sh", "-c", "echo partial; echo source words >&2; exit 4"], ["cat"], timeout=10
    )
    assert snk.ok and snk.stdout == "partial\n"
    assert (src.returncode, src.stderr) == (4, "source words\n")


def test_pipeline_failing_sink_stops_the_source_at_once():
    t0 = time.monotonic()
    src, snk = process.pipeline(
        ["sh", "-c", "echo $$ >&2; trap '' PIPE; while :; do echo y; done 2>/dev/null"],
        ["sh", "-c", "head -c 1 >/dev/null; echo sink words; exit 5"],
        timeout=30,
        grace=0.5,
    )
    assert (snk.returncode, snk.stdout) == (5, "sink words\n")
    assert src.returncode is not None and src.returncode < 0 and not src.timed_out  # stopped, not timed out
    assert time.monotonic() - t0 < 5
    assert_group_gone(src.pid)


def test_pipeline_source_that_lingers_after_a_successful_sink_is_stopped():
    t0 = time.monotonic()
    src, snk = process.pipeline(
        ["sh", "-c", "echo data; exec >&-; exec sleep 60"], ["cat"], timeout=30, grace=0.5, linger=0.3
    )
    assert snk.ok and snk.stdout == "data\n"
    assert src.signal == "SIGTERM" and not src.timed_out
    assert time.monotonic() - t0 < 3


def test_pipeline_deadline_stops_both():
    t0 = time.monotonic()
    src, snk = process.pipeline(["sleep", "60"], ["cat"], timeout=0.5, grace=0.5)
    assert src.timed_out and snk.timed_out
    assert time.monotonic() - t0 < 3
    assert_group_gone(src.pid)
    assert_group_gone(snk.pid)


def _running_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_pipeline_missing_sink_stops_the_source():
    token = "61.2345"  # an argument no other process has
    with pytest.raises(FileNotFoundError):
        process.pipeline(["sleep", token], ["no-such-sink-cordee-test"], timeout=30, grace=0.5)
    deadline = time.monotonic() + 2
    while _running_with(token):
        assert time.monotonic() < deadline, "the source outlived the failed pipeline"
        time.sleep(0.02)
    with pytest.raises(FileNotFoundError):
        process.pipeline(["no-such-source-cordee-test"], ["cat"], timeout=30)


# --- ranks: start() and stop() ----------------------------------------------------------------------


def test_rank_style_start_dies_with_its_parent(tmp_path):
    """A parent starts a child with die_with_parent and an affinity, then is SIGKILLed: the kernel
    ends the child (PR_SET_PDEATHSIG)."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    rank = (
        "import os, time; "
        "line = '%d %d %s\\n' % (os.getpid(), os.getpgid(0), sorted(os.sched_getaffinity(0))); "
        "os.write(1, line.encode()); time.sleep(60)"
    )
    parent_code = f"""
        import sys, time
        from cordee import process
        argv = [sys.executable, "-c", {rank!r}]
        process.start(argv, isolate="group", die_with_parent=True, cpus={{{cpu}}})
        time.sleep(60)
    """
    parent = process.start(py(parent_code), stdout=process.CAPTURE, isolate="group")
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 10)
        assert ready, "the rank did not report"
        line = parent.stdout.readline().decode()
        pid, pgid, cpus = line.split(" ", 2)
        pid, pgid = int(pid), int(pgid)
        assert pgid == pid and cpus.strip() == f"[{cpu}]"
        assert alive(pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        parent.stdout.close()
    assert_gone(pid, within=5)


def test_stop_terms_then_kills_and_clears_the_groups():
    stubborn = py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """)
    # a rank that obeys TERM, with a worker that does not (it must go with the rank's group)
    with_worker = py("""
        import os, signal, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(1, b"worker %d\\n" % os.getpid())
            time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
        os.write(1, b"ready\\n")
        time.sleep(60)
    """)
    a = process.start(stubborn, stdout=process.CAPTURE, isolate="group")
    b = process.start(with_worker, stdout=process.CAPTURE, isolate="group")
    try:
        assert a.stdout.readline() == b"ready\n"
        worker = int(b.stdout.readline().split()[1])
        assert b.stdout.readline() == b"ready\n"
        killed = []
        t0 = time.monotonic()
        process.stop([a, b], grace=0.5, on_kill=killed.append)
        assert time.monotonic() - t0 < 3
        assert killed == [a]
        assert a.returncode == -signal.SIGKILL and b.returncode == -signal.SIGTERM
        assert_gone(worker)
        assert_group_gone(a.pid)
        assert_group_gone(b.pid)
        process.stop([a, b], grace=0.5)  # already stopped: nothing to do
    finally:
        for p in (a, b):
            if p.returncode is None:
                p.kill()
                p.wait()
            p.stdout.close()
