"""Acceptance tests of `cordee launch` under a real multi-node srun:

    srun -N2 --ntasks-per-node=2 --kill-on-bad-exit=1 cordee launch -- python -c CODE

cordee launch must set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR and
MASTER_PORT and exec CMD; the ranks then meet in a gloo process group across the two nodes
(separate network namespaces, each with its own hostname and address).
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.slurm

LAUNCH = ["cordee", "launch", "--"]
STEP_2X2 = ["-N2", "--ntasks-per-node=2", "--kill-on-bad-exit=1"]

SHOW_ENV = """
import json, os, socket
keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
view = {k: os.environ.get(k) for k in keys}
view.update(hostname=socket.gethostname(), step_nodes=os.environ.get("SLURM_STEP_NODELIST"))
print(json.dumps(view), flush=True)
"""

ALL_REDUCE = """
import datetime, json, os, socket
import torch
import torch.distributed as dist
dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
line = json.dumps({"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": t.item(),
                   "hostname": socket.gethostname()})
os.write(1, (line + "\\n").encode())  # one write: local ranks of a task share its stdout
dist.destroy_process_group()
"""

FAIL_ONE = """
import os, sys, time
time.sleep(1)
if os.environ["RANK"] == "3":
    sys.exit(1)
time.sleep(60)  # cordee-fail-marker: must be killed by --kill-on-bad-exit
"""


def _records(cp) -> list[dict]:
    assert cp.returncode == 0, f"srun exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    return [json.loads(line) for line in cp.stdout.splitlines() if line.startswith("{")]


def _refers_to(cluster, addr: str, node: str) -> bool:
    return addr in (node, cluster.node_addrs[node])


def test_launch_sets_rank_variables(slurm_cluster):
    cp = slurm_cluster.srun([*STEP_2X2, *LAUNCH, "python", "-c", SHOW_ENV], timeout=120)
    rows = _records(cp)
    first, second = slurm_cluster.node_names[:2]
    assert sorted(int(r["RANK"]) for r in rows) == [0, 1, 2, 3], rows
    for r in rows:
        assert r["WORLD_SIZE"] == "4", r
        assert r["LOCAL_WORLD_SIZE"] == "2", r
        assert _refers_to(slurm_cluster, r["MASTER_ADDR"], first), r
        # block distribution: ranks 0,1 on the first node, 2,3 on the second
        assert int(r["RANK"]) == 2 * int(r["NODE_RANK"]) + int(r["LOCAL_RANK"]), r
    by_host = {h: sorted(int(r["LOCAL_RANK"]) for r in rows if r["hostname"] == h) for h in (first, second)}
    assert by_host == {first: [0, 1], second: [0, 1]}, rows
    assert {r["NODE_RANK"] for r in rows if r["hostname"] == first} == {"0"}
    assert {r["NODE_RANK"] for r in rows if r["hostname"] == second} == {"1"}
    ports = {r["MASTER_PORT"] for r in rows}
    assert len(ports) == 1, f"ranks disagree on MASTER_PORT: {ports}"
    assert 1024 <= int(ports.pop()) <= 65535


def test_master_is_first_node_of_the_step(slurm_cluster):
    """A step on the second node only: MASTER_ADDR is that node, not the first of the cluster."""
    second = slurm_cluster.node_names[1]
    cp = slurm_cluster.srun(["-N1", f"-w{second}", "-n2", *LAUNCH, "python", "-c", SHOW_ENV], timeout=120)
    rows = _records(cp)
    assert sorted(int(r["RANK"]) for r in rows) == [0, 1], rows
    for r in rows:
        assert r["WORLD_SIZE"] == "2" and r["NODE_RANK"] == "0", r
        assert _refers_to(slurm_cluster, r["MASTER_ADDR"], second), r


def test_gloo_all_reduce_across_nodes(slurm_cluster):
    cp = slurm_cluster.srun([*STEP_2X2, *LAUNCH, "python", "-c", ALL_REDUCE], timeout=180)
    rows = _records(cp)
    assert sorted(r["rank"] for r in rows) == [0, 1, 2, 3], f"{rows}\n{cp.stderr}"
    assert all(r["world"] == 4 and r["sum"] == 10.0 for r in rows), rows  # 1+2+3+4
    assert {r["hostname"] for r in rows} == set(slurm_cluster.node_names[:2])


def test_failing_rank_ends_the_step_promptly(slurm_cluster):
    t0 = time.monotonic()
    cp = slurm_cluster.srun([*STEP_2X2, *LAUNCH, "python", "-c", FAIL_ONE], timeout=120)
    elapsed = time.monotonic() - t0
    assert cp.returncode != 0, f"{cp.stdout}\n{cp.stderr}"
    assert elapsed < 30, f"step took {elapsed:.1f}s: the other ranks were not killed\n{cp.stderr}"
    assert "task 3: Exited with exit code 1" in cp.stderr, cp.stderr
    deadline = time.monotonic() + 20
    while left := [p for p in slurm_cluster.node_processes() if "cordee-fail-marker" in p[2]]:
        assert time.monotonic() < deadline, f"ranks still running after the step ended: {left}"
        time.sleep(0.2)


def test_nproc_per_node_under_slurm(slurm_cluster):
    """One srun task per node, each starting 2 local ranks: world 4 over 2 nodes."""
    step = ["-N2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    cmd = ["cordee", "launch", "--nproc-per-node", "2", "--", "python", "-c", ALL_REDUCE]
    cp = slurm_cluster.srun([*step, *cmd], timeout=180)
    rows = _records(cp)
    assert sorted(r["rank"] for r in rows) == [0, 1, 2, 3], f"{rows}\n{cp.stderr}"
    assert all(r["world"] == 4 and r["sum"] == 10.0 for r in rows), rows
    first, second = slurm_cluster.node_names[:2]
    assert {r["rank"] for r in rows if r["hostname"] == first} == {0, 1}, rows
    assert {r["rank"] for r in rows if r["hostname"] == second} == {2, 3}, rows


def test_env_show_json_under_srun(slurm_cluster):
    """`cordee env show --json` in each task of a real step: Slurm's own variables, read back."""
    cp = slurm_cluster.srun(["-l", *STEP_2X2, "cordee", "env", "show", "--json"], timeout=120)
    assert cp.returncode == 0, cp.stderr
    per_task: dict[int, list[str]] = {}
    for line in cp.stdout.splitlines():
        task, _, text = line.partition(": ")
        per_task.setdefault(int(task), []).append(text)
    docs = {task: json.loads("\n".join(lines)) for task, lines in per_task.items()}
    assert sorted(docs) == [0, 1, 2, 3]
    for task, d in docs.items():
        assert d["schema"] == "cordee.env/1" and d["scheduler"] == "slurm"
        assert (d["rank"], d["world_size"], d["nnodes"]) == (task, 4, 2)
        assert d["nodes"] == slurm_cluster.node_names[:2] and d["master_addr"] == slurm_cluster.node_names[0]
        assert d["master_port_source"] == "derived" and d["job_id"] and d["step_id"] is not None
    assert len({d["master_port"] for d in docs.values()}) == 1
