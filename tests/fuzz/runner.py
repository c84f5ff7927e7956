"""Run the real `cordee` command once in a sandbox, as a user would from a shell, and collect what
the contract (contract.py) is checked on: exit code, output, time, where a hung run was stuck,
processes and temporary files it left, files it changed where it may not.

Each run leads a session of its own. At the deadline it gets SIGABRT (PYTHONFAULTHANDLER prints
its Python stack), then everything it started is killed. Processes it started are found by a
marker variable in their environment (CORDEE_FUZZ_RUN), so children that start sessions of their
own (net show's probes) are found too, and nothing else on the machine is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from fuzz.sandbox import (
    Sandbox,
    allowed,
    changes,
    leftover_temp_files,
    restore_sentinel,
    session_sentinel,
    snapshot,
)

# the installed console script; CORDEE_FUZZ_PROGRAM: another cordee executable to try
CORDEE = os.environ.get("CORDEE_FUZZ_PROGRAM") or str(Path(sys.executable).with_name("cordee"))
DEADLINE_S = float(os.environ.get("CORDEE_FUZZ_DEADLINE", "10"))
ABORT_S = 3.0  # after SIGABRT at the deadline: time for faulthandler to print the stack
LINGER_S = 1.0  # after the exit: time for what the run killed itself to be gone
DATA_LIMIT = 2 << 30  # reading /dev/zero then fails in seconds instead of filling the machine's memory
FILE_LIMIT = 256 << 20


class Command(NamedTuple):
    verb: str  # what runs are counted by, e.g. "image render"
    args: tuple[str, ...]  # after `cordee`; placeholders ({CWD} ...) allowed, as everywhere here
    env: Mapping[str, str | None] = {}  # changes to the sandbox environment; None unsets
    files: Mapping[str, object] = {}  # created before the run: run-relative path -> Sandbox.put's what
    stdin: bytes = b""
    may_write: tuple[str, ...] = ()  # paths (relative to the working directory) the verb may change
    deadline: float = DEADLINE_S
    report_verb: bool = False  # its exit 2 may be a report on stdout with nothing on stderr
    error_lines: int | None = 1  # stderr lines allowed with exit 2; None: one per spec error (validate)


class Outcome(NamedTuple):
    command: Command
    argv: list[str]  # as run, placeholders expanded
    env: dict[str, str | None]  # the command's environment changes, expanded
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    seconds: float
    hung: bool  # still running at the deadline
    leftovers: list[str]  # command lines of processes still running after the exit
    temp_files: list[str]  # left in TMPDIR
    changed: list[tuple[str, str]]  # (path, how) where the verb may not write


def _limit_resources() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def marked_processes(marker: str) -> dict[int, str]:
    """Live processes whose environment carries the marker: pid -> command line."""
    needle = f"CORDEE_FUZZ_RUN={marker}\0".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read() + b"\0":
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2 :][:1] in (b"Z", b"X"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                found[int(name)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
    return found


def _kill_all(marker: str) -> None:
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _lingering(marker: str) -> dict[int, str]:
    """What is still running once the run has had LINGER_S to let its children go."""
    end = time.monotonic() + LINGER_S
    while (found := marked_processes(marker)) and time.monotonic() < end:
        time.sleep(0.05)
    return found


def _communicate(proc: subprocess.Popen, timeout: float, stdin: bytes | None = None):
    try:
        return proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _wait(proc: subprocess.Popen, command: Command, marker: str) -> tuple[bytes, bytes, bool, dict]:
    """(stdout, stderr, hung, leftovers), the run and all it started gone afterwards."""
    got = _communicate(proc, command.deadline, command.stdin or None)
    hung, leftovers = False, {}
    if got is None and proc.poll() is None:  # still running: where is it stuck?
        hung = True
        os.kill(proc.pid, signal.SIGABRT)
        got = _communicate(proc, ABORT_S)
    if got is None:  # the run is stuck even so, or what it left holds its stdout/stderr open
        leftovers = {} if hung else marked_processes(marker)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_all(marker)
        got = _communicate(proc, 10)
        if got is None:
            raise RuntimeError(f"cannot stop {proc.args}: the harness cannot go on")
    leftovers = leftovers or ({} if hung else _lingering(marker))
    _kill_all(marker)
    return got[0], got[1], hung, leftovers


def run_in(box: Sandbox, command: Command, program: tuple[str, ...] = (CORDEE,)) -> Outcome:
    """Run `command` in `box` (files created first); the box is left as the run left it.
    `program`: what runs instead of cordee (the harness's own tests)."""
    for rel, what in command.files.items():
        box.put(rel, what)
    marker = uuid.uuid4().hex
    env = box.environ(marker)
    changed_env = {k: None if v is None else box.expand(v) for k, v in command.env.items()}
    for key, value in changed_env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    argv = [*program, *(box.expand(a) for a in command.args)]
    may_write = tuple(os.path.abspath(os.path.join(box.cwd, box.expand(p))) for p in command.may_write)
    tops = (box.run, box.sentinel)
    before = {top: snapshot(top, skip=(box.tmp,)) for top in tops}
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=box.cwd,
        env=env,
        stdin=subprocess.PIPE if command.stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_limit_resources,
    )
    out, err, hung, leftovers = _wait(proc, command, marker)
    seconds = time.monotonic() - start
    changed = []
    for top in tops:
        after = snapshot(top, skip=(box.tmp,))
        sandboxed = top == box.run
        for path, how in changes(before[top], after):
            if not (sandboxed and allowed(path, how, may_write, after)):
                changed.append((path, how))
        if top == box.sentinel and after != before[top]:
            restore_sentinel(box.sentinel)
    return Outcome(
        command=command,
        argv=argv,
        env=changed_env,
        returncode=proc.returncode,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        seconds=seconds,
        hung=hung,
        leftovers=sorted(leftovers.values()),
        temp_files=leftover_temp_files(box.tmp),
        changed=changed,
    )


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(session_sentinel())
    try:
        yield box
    finally:
        box.remove()


def run(command: Command, program: tuple[str, ...] = (CORDEE,)) -> Outcome:
    """Run `command` in a fresh sandbox, removed afterwards."""
    with sandbox() as box:
        return run_in(box, command, program)
