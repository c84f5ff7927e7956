"""Run a library query in a child Python process with a timeout.

Loading a vendor library and calling into it (fi_getinfo on a broken CXI driver, a plugin's
init) can crash or hang; in a child, that becomes an error message and cordee keeps running.
The child prints one JSON document on stdout; everything else it says goes to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import NamedTuple


class ChildResult(NamedTuple):
    doc: dict | None
    error: str | None  # None when doc is the child's answer
    stderr: str


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def run_module(
    module: str, args: list[str], *, environ: Mapping[str, str], timeout: float, what: str
) -> ChildResult:
    """`python -m module args...` in its own session; killed with its group after `timeout` s."""
    env = dict(environ)
    # the child must import this very cordee, also when it runs from a source tree
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return ChildResult(None, f"{what} did not finish within {timeout:g} s (killed)", err)
    if proc.returncode < 0:
        return ChildResult(None, f"{what} crashed ({_signal_name(proc.returncode)})", err)
    try:
        doc = json.loads(out)
    except ValueError:
        last = (err.strip().splitlines() or ["no output"])[-1]
        return ChildResult(None, f"{what} failed (exit {proc.returncode}): {last}", err)
    return ChildResult(doc, None, err)


def emit(doc: dict) -> None:
    """Child side: the one JSON document, written in one call."""
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
