"""Run cordee code in a child Python process with a timeout.

Loading a vendor library and calling into it (fi_getinfo on a broken CXI driver, a net plugin's
init) can crash or hang; in a child, that becomes an error message and cordee keeps running.
`run_python` runs the child on cordee.process: it leads its own session, and at the timeout its
whole process group is killed, helpers a plugin forked included. `run_module` adds the protocol of
`cordee net show`'s library queries (library_child.py): the child prints one JSON document on stdout
(`emit`), everything else it says goes to stderr. The net plugin probe (netplugin/probe.py) runs on
`run_python` with a progress file of its own.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import NamedTuple

from cordee import process
from cordee.process import signal_name

DRAIN_S = process.DRAIN_S  # after the kill: how long the pipes may take to close, and the kill to be reaped


class Finished(NamedTuple):
    returncode: int  # negative: ended by that signal (-9 once killed at the timeout)
    timed_out: bool  # the child itself was still running at the timeout, and was killed
    stdout: str
    stderr: str


class ChildResult(NamedTuple):
    doc: dict | None
    error: str | None  # None when doc is the child's answer
    stderr: str


def run_python(module: str, args: list[str], *, environ: Mapping[str, str], timeout: float) -> Finished:
    """`python -m module args...` with `environ`; its process group is killed after `timeout` s
    (SIGKILL at once: a library hung in C code has nothing to clean up)."""
    env = dict(environ)
    # the child must import this very cordee, whether installed or run from a source tree
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    run = process.run([sys.executable, "-m", module, *args], env=env, timeout=timeout, grace=0, drain=DRAIN_S)
    # a child still there after SIGKILL (stuck in the kernel) counts as killed
    code = -9 if run.returncode is None else run.returncode
    return Finished(code, run.timed_out, run.stdout, run.stderr)


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
