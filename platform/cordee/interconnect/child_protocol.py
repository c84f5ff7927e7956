"""Run cordee code in a child Python process with a timeout.

Loading a vendor library and calling into it (fi_getinfo on a broken CXI driver, a net plugin's
init) can crash or hang; in a child, that becomes an error message and cordee keeps running.
`run_python` is the one mechanism: the child leads its own session, and at the timeout its whole
process group is killed, helpers a plugin forked included. `run_module` adds the protocol of
`cordee net show`'s library queries (library_child.py): the child prints one JSON document on stdout
(`emit`), everything else it says goes to stderr. The net plugin probe (netplugin.py) runs on
`run_python` with a progress file of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import NamedTuple

DRAIN_S = 5.0  # after the kill: how long the pipes may take to close, and the kill to be reaped


class Finished(NamedTuple):
    returncode: int  # negative: ended by that signal (-9 once killed at the timeout)
    timed_out: bool  # the child itself was still running at the timeout, and was killed
    stdout: str
    stderr: str


class ChildResult(NamedTuple):
    doc: dict | None
    error: str | None  # None when doc is the child's answer
    stderr: str


def signal_name(returncode: int) -> str:
    """ "SIGSEGV" for a return code of -11."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the child leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def run_python(module: str, args: list[str], *, environ: Mapping[str, str], timeout: float) -> Finished:
    """`python -m module args...` with `environ`; its process group is killed after `timeout` s."""
    env = dict(environ)
    # the child must import this very cordee, whether installed or run from a source tree
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = proc.poll() is None  # else: it finished but something it started holds the pipes
        _kill_group(proc.pid)
        try:
            out, err = proc.communicate(timeout=DRAIN_S)
        except subprocess.TimeoutExpired:  # a grandchild in a session of its own holds the pipes
            proc.kill()
            proc.wait(timeout=DRAIN_S)
            out, err = b"", b""
    # bytes, decoded here: a plugin or provider may print anything on stderr
    return Finished(proc.returncode, timed_out, out.decode(errors="replace"), err.decode(errors="replace"))


def run_module(
    module: str, args: list[str], *, environ: Mapping[str, str], timeout: float, what: str
) -> ChildResult:
    """run_python, then the one JSON object the child printed, or an error line naming `what`."""
    run = run_python(module, args, environ=environ, timeout=timeout)
    if run.timed_out:
        return ChildResult(None, f"{what} did not finish within {timeout:g} s (killed)", run.stderr)
    if run.returncode < 0:
        return ChildResult(None, f"{what} crashed ({signal_name(run.returncode)})", run.stderr)
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return ChildResult(None, f"{what} failed (exit {run.returncode}): {last}", run.stderr)
    return ChildResult(doc, None, run.stderr)


def emit(doc: dict) -> None:
    """Child side: the one JSON document, written in one call."""
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
