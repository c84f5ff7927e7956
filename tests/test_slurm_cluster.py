"""The test Slurm cluster itself: two nodes with their own names and addresses, steps across
both, and a step with a failing task ended promptly by --kill-on-bad-exit."""

from __future__ import annotations

import collections
import time

import pytest

pytestmark = pytest.mark.slurm


def _lines(cp) -> list[str]:
    assert cp.returncode == 0, f"srun failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}"
    return [line for line in cp.stdout.splitlines() if line.strip()]


def test_nodes_are_idle_and_named(slurm_cluster):
    assert len(slurm_cluster.node_names) == 4
    states = slurm_cluster.node_states()
    assert states == {n: "idle" for n in slurm_cluster.node_names}


def test_two_tasks_on_each_of_two_nodes(slurm_cluster):
    cp = slurm_cluster.srun(["-N2", "--ntasks-per-node=2", "hostname"], timeout=60)
    counts = collections.Counter(_lines(cp))
    assert len(counts) == 2 and set(counts.values()) == {2}, counts
    assert set(counts) <= set(slurm_cluster.node_names)


def test_each_node_has_its_own_address(slurm_cluster):
    code = (
        "import os, socket, subprocess\n"
        "addr = subprocess.run(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'], capture_output=True,"
        " text=True, check=True).stdout.split()[3].split('/')[0]\n"
        "print(os.environ['SLURM_PROCID'], socket.gethostname(), addr,"
        " socket.gethostbyname(socket.gethostname()))\n"
    )
    cp = slurm_cluster.srun(["-N2", "--ntasks-per-node=2", "python", "-c", code], timeout=60)
    rows = [line.split() for line in _lines(cp)]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2, 3]
    seen = {}
    for _rank, host, addr, resolved in rows:
        assert addr == resolved == slurm_cluster.node_addrs[host], rows
        seen.setdefault(host, set()).add(addr)
    assert len(seen) == 2 and set(seen) <= set(slurm_cluster.node_names), seen
    assert len({a for addrs in seen.values() for a in addrs}) == 2, seen


def test_nodes_reach_each_other_over_tcp(slurm_cluster):
    """Task 0 listens on its node's address, task 1 (on the other node) connects to it."""
    first = slurm_cluster.node_names[0]
    code = (
        "import os, socket, sys\n"
        "if os.environ['SLURM_PROCID'] == '0':\n"
        "    s = socket.create_server(('0.0.0.0', 29511)); s.settimeout(20)\n"
        "    c, peer = s.accept(); print('server got', c.recv(16).decode(), 'from', peer[0])\n"
        "else:\n"
        "    import time\n"
        "    for _ in range(100):\n"
        "        try:\n"
        f"            c = socket.create_connection(('{first}', 29511), timeout=5); break\n"
        "        except OSError: time.sleep(0.1)\n"
        "    c.sendall(b'hello'); print('client sent')\n"
    )
    cp = slurm_cluster.srun(["-N2", "--ntasks-per-node=1", "python", "-c", code], timeout=60)
    out = "\n".join(_lines(cp))
    second_addr = slurm_cluster.node_addrs[slurm_cluster.node_names[1]]
    assert f"server got hello from {second_addr}" in out
    assert "client sent" in out


def _wait_no_tasks(cluster, timeout: float = 20.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in cluster.node_processes() if "sleep" in p[2]]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_failing_task_ends_the_step_promptly(slurm_cluster):
    script = 'if [ "$SLURM_PROCID" = 3 ]; then sleep 1; exit 1; fi; exec sleep 60'
    t0 = time.monotonic()
    cp = slurm_cluster.srun(
        ["-N2", "--ntasks-per-node=2", "--kill-on-bad-exit=1", "sh", "-c", script], timeout=90
    )
    elapsed = time.monotonic() - t0
    assert cp.returncode != 0, cp.stderr
    assert elapsed < 30, f"step took {elapsed:.1f}s; the sleeping tasks were not killed\n{cp.stderr}"
    assert "task 3: Exited with exit code 1" in cp.stderr
    assert _wait_no_tasks(slurm_cluster) == []
