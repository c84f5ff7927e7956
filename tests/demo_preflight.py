"""`make demo`, the preflight part: `cordee preflight --level standard` in every task of a 4-node
step on the Slurm test cluster, healthy, then with one node's link slowed from outside by traffic
control (tbf on the host side of its veth), as an operator would meet a bad cable. Prints rank 0's
table and the bad-node hostlist for `srun --exclude`. Used by tests/demo.py.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slurmtest.network import veth_name

SLOW_LINK = "tbf rate 100mbit burst 32kbit latency 400ms".split()  # the slowed node's veth, ~1% of healthy


def _step(cluster, out: Path, exclude: Path) -> list[str]:
    return [
        "-N4", "--ntasks-per-node=2", "--kill-on-bad-exit=1", "cordee", "preflight", "--level", "standard",
        "--system", "cpu-ci", "--json", str(out), "--exclude-file", str(exclude),
    ]  # fmt: skip


def _run(cluster, title: str, tmp: Path, name: str) -> dict | None:
    out, exclude = tmp / f"{name}.json", tmp / f"{name}.exclude"
    args = _step(cluster, out, exclude)
    print(f"\n== {title}\n== srun {shlex.join(args)}", flush=True)
    t0 = time.monotonic()
    cp = cluster.srun(args, timeout=300)
    took = time.monotonic() - t0
    print(cp.stdout.rstrip())
    if not out.exists():
        print(f"demo: the preflight wrote no results (exit {cp.returncode}):\n{cp.stderr}", file=sys.stderr)
        return None
    doc = json.loads(out.read_text())
    hostlist = exclude.read_text().strip() if exclude.exists() else ""
    print(f"-- exit {cp.returncode} in {took:.0f}s; bad nodes for srun --exclude: {hostlist or '(none)'}")
    return {"rc": cp.returncode, "doc": doc, "exclude": hostlist}


def preflight_step(cluster) -> list[str]:
    """Problems found (empty: the healthy run passed and the slowed run named exactly that node)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="cordee-demo-preflight-") as tmp:
        healthy = _run(cluster, "preflight, healthy cluster", Path(tmp), "healthy")
        if healthy is None or healthy["rc"] != 0 or healthy["exclude"]:
            problems.append("the healthy preflight did not pass with nobody accused")
        slow = cluster.node_names[2]
        dev = veth_name(cluster.id, 1 + cluster.node_names.index(slow))  # hosts: ctl, then the nodes
        subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", *SLOW_LINK], check=True, timeout=10)
        try:
            title = f"preflight, {slow}'s link slowed to 100 Mbit/s (tc tbf on {dev})"
            slowed = _run(cluster, title, Path(tmp), "slowed")
        finally:
            subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)
        if slowed is None or slowed["exclude"] != slow:
            got = slowed["exclude"] if slowed else "no result"
            problems.append(f"the slowed-link preflight should name exactly {slow}, got {got!r}")
    return problems
