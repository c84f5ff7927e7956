"""`cordee preflight` in every task of a real 4-node Slurm step (gloo on CPUs, cpu-ci), with
faults made from outside as an operator would meet them:

- a healthy cluster passes, nobody accused;
- one node's link slowed with traffic control (tbf on the host side of its veth): that node, and
  only it, lands in the exclude hostlist;
- one rank slowed by a SIGSTOP/SIGCONT duty cycle: named as a straggler, with its ratio;
- a rank killed or stopped in the middle of a collective: the step ends with exit 3 within the
  stall timeout + a few seconds, the error naming the rank and its node;
- the wrong-data fault switch: the verification names the rank.

The repeated figures (how often each case comes out right) are in
tests/benchmarks/bench_preflight_faults.py; here each case runs once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cordee.preflight.results import Check, Result

pytestmark = pytest.mark.slurm

TESTS = str(Path(__file__).resolve().parent)
STEP = ["-N4", "--kill-on-bad-exit=1"]
HOLD_S = 40.0  # the injected collective loop: long enough to be interrupted from outside


# --- injected: every rank loops on all_reduce (CORDEE_PREFLIGHT_REGISTRY=test_preflight_slurm:hold)


def _hold(ctx):
    import torch
    import torch.distributed as dist

    from cordee.preflight.checks_torch import dist_of

    dist_of(ctx)
    Path(os.environ["CORDEE_TEST_HOLD_DIR"], f"rank{ctx.rank}").touch()
    t = torch.ones(1 << 14)
    end = time.monotonic() + HOLD_S
    while time.monotonic() < end:
        dist.all_reduce(t)
        t.fill_(1.0)
    return [Result("test.all_reduce_loop", "ok")]


def hold(level):
    return [Check("test.all_reduce_loop", "job", "standard", 120.0, _hold)]


# --- helpers ---------------------------------------------------------------------------------


def run_preflight(cluster, step, args, timeout=240, **env):
    env = {"PYTHONPATH": TESTS, **env}
    t0 = time.monotonic()
    cp = cluster.srun([*STEP, *step, "cordee", "preflight", *args], timeout=timeout, env=env)
    return cp, time.monotonic() - t0


def doc_of(path: Path, cp) -> dict:
    assert path.exists(), f"no JSON written; rc {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return json.loads(path.read_text())


def rank_pids(cluster) -> dict[int, tuple[str, int]]:
    """rank -> (node, pid) of the `cordee preflight` tasks running now."""
    found = {}
    for node, pid, cmd in cluster.node_processes():
        if "cordee preflight" not in cmd:
            continue
        with contextlib.suppress(OSError):
            env = dict(
                item.split("=", 1)
                for item in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
            if "SLURM_PROCID" in env:
                found[int(env["SLURM_PROCID"])] = (node, pid)
    return found


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def in_background(cluster, step, args, **env):
    box = {}

    def go():
        box["cp"], box["took"] = run_preflight(cluster, step, args, **env)

    thread = threading.Thread(target=go)
    thread.start()
    return thread, box


def veth_of(cluster, node: str) -> str:
    """The host-side veth of a node: hosts are numbered ctl = 0, then the nodes in order
    (slurmtest.cluster: links are veth_name(id, i) over [ctl, *node_names])."""
    from slurmtest.network import veth_name

    return veth_name(cluster.id, 1 + cluster.node_names.index(node))


# --- the cases (also run repeatedly by tests/benchmarks/bench_preflight_faults.py) --------------

TBF = "tbf rate 100mbit burst 32kbit latency 400ms".split()


def case_healthy(cluster, tmp: Path) -> dict:
    out = tmp / "healthy.json"
    cp, took = run_preflight(cluster, ["--ntasks-per-node=2"], ["--json", str(out)])
    doc = doc_of(out, cp)
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    assert doc["exit_code"] == 0 and doc["bad_nodes"] == [] and doc["ranks"] == 8
    assert doc["nodes"] == cluster.node_names
    checks = {r["check"] for r in doc["results"]}
    assert {"collective.all_reduce.intra", "collective.all_reduce.inter", "isolation", "straggler"} <= checks
    (iso,) = [r for r in doc["results"] if r["check"] == "isolation"]
    assert iso["status"] == "ok" and iso["value"] == 0, iso
    return {"seconds": took}


def case_slowed_link(cluster, tmp: Path, slow_index: int = 2) -> dict:
    slow = cluster.node_names[slow_index]
    dev = veth_of(cluster, slow)
    out, exclude = tmp / "slow.json", tmp / "bad.txt"
    subprocess.run(
        ["tc", "qdisc", "add", "dev", dev, "root", *TBF], check=True, capture_output=True, timeout=10
    )
    try:
        args = ["--checks", "isolation", "--json", str(out), "--exclude-file", str(exclude)]
        cp, took = run_preflight(cluster, ["--ntasks-per-node=1"], args)
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)
    doc = doc_of(out, cp)
    assert cp.returncode == 2, f"{cp.stdout}\n{cp.stderr}"
    assert doc["bad_nodes"] == [slow] and exclude.read_text().strip() == slow, doc["bad_nodes"]
    assert f"--exclude={slow}" in cp.stderr
    (iso,) = [r for r in doc["results"] if r["check"] == "isolation"]
    return {"seconds": took, "rounds": len(iso["data"]["rounds"])}


def case_straggler(cluster, tmp: Path, victim_rank: int = 3) -> dict:
    """One rank stopped 90 ms of every 100 (SIGSTOP / SIGCONT from outside) while it works."""
    out = tmp / "straggler.json"
    args = ["--checks", "straggler.work", "--json", str(out)]
    thread, box = in_background(cluster, ["--ntasks-per-node=1"], args)
    try:
        node, pid = wait_for(lambda: rank_pids(cluster).get(victim_rank), 60, "the rank to start")
        while thread.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.09)
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(pid, signal.SIGCONT)
        thread.join(240)
    cp = box["cp"]
    doc = doc_of(out, cp)
    named = [r for r in doc["results"] if r["check"] == "straggler" and r["status"] in ("warn", "fail")]
    assert [(r["rank"], r["node"]) for r in named] == [(victim_rank, node)], f"{named}\n{cp.stderr}"
    assert named[0]["value"] > 1.5 and "x the median" in named[0]["detail"]
    return {"seconds": box["took"], "ratio": named[0]["value"]}


def case_signal_mid_collective(cluster, tmp: Path, sig: str, victim_rank: int = 5) -> dict:
    """Every rank loops on all_reduce; one (nid003, local rank 1: rank 4 shares its node) gets
    SIGKILL or SIGSTOP. The step must end within the stall timeout (5 s) + 10 s, naming it."""
    out, hold_dir = tmp / f"{sig}.json", tmp / f"hold-{sig}"
    hold_dir.mkdir()
    args = ["--json", str(out), "--timeout", "120"]
    env = {"CORDEE_PREFLIGHT_REGISTRY": "test_preflight_slurm:hold", "CORDEE_TEST_HOLD_DIR": str(hold_dir)}
    thread, box = in_background(cluster, ["--ntasks-per-node=2"], args, **env)
    wait_for(lambda: len(list(hold_dir.iterdir())) == 8, 120, "every rank in the collective loop")
    node, pid = rank_pids(cluster)[victim_rank]
    time.sleep(1.0)
    os.kill(pid, getattr(signal, sig))
    signalled = time.monotonic()
    thread.join(120)
    took = time.monotonic() - signalled
    cp = box["cp"]
    assert took < 5 + 10, f"step ended {took:.1f} s after the {sig}\n{cp.stderr}"
    assert cp.returncode != 0
    doc = doc_of(out, cp)
    assert doc["exit_code"] == 3
    # the collector's verdict names the victim (peers whose collective broke may add errors of their own)
    errors = [r for r in doc["results"] if r["status"] == "error"]
    (err,) = [r for r in errors if r["rank"] == victim_rank]
    assert (err["node"], err["check"]) == (node, "test.all_reduce_loop"), err
    why = "stopped responding (no heartbeat for" if sig == "SIGSTOP" else "lost its connection"
    assert why in err["detail"], err
    assert f"rank {victim_rank} on {node}" in cp.stderr
    wait_for(lambda: not rank_pids(cluster), 20, "no rank left")
    return {"seconds_after_signal": took}


def case_wrong_data(cluster, tmp: Path) -> dict:
    out = tmp / "wrong.json"
    args = ["--checks", "collective.all_gather.inter", "--json", str(out)]
    cp, took = run_preflight(cluster, ["--ntasks-per-node=1"], args, CORDEE_PREFLIGHT_FAULT="wrong-data:2")
    doc = doc_of(out, cp)
    assert cp.returncode == 2, f"{cp.stdout}\n{cp.stderr}"
    (bad,) = [r for r in doc["results"] if r["status"] == "fail"]
    third = cluster.node_names[2]
    assert bad["data"]["wrong_ranks"] == [2] and f"rank 2 on {third}" in bad["detail"]
    return {"seconds": took}


def test_healthy_cluster_passes_with_nobody_accused(slurm_cluster, tmp_path):
    case_healthy(slurm_cluster, tmp_path)


def test_a_slowed_link_names_exactly_that_node(slurm_cluster, tmp_path):
    case_slowed_link(slurm_cluster, tmp_path)


def test_a_rank_slowed_by_stop_and_continue_is_named_a_straggler(slurm_cluster, tmp_path):
    case_straggler(slurm_cluster, tmp_path)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSTOP"])
def test_a_rank_killed_or_stopped_mid_collective_ends_the_step_with_3(slurm_cluster, tmp_path, sig):
    case_signal_mid_collective(slurm_cluster, tmp_path, sig)


def test_wrong_data_names_the_rank(slurm_cluster, tmp_path):
    case_wrong_data(slurm_cluster, tmp_path)
