"""`cordee launch` as a user runs it, outside Slurm: exec, local ranks, failures, signals, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from launchvars import clean_env as launch_free

CORDEE = str(Path(sys.executable).with_name("cordee"))
PY = sys.executable


def clean_env(**extra):
    return launch_free(names=("OMP_NUM_THREADS",), **extra)


def run(args, env=None, timeout=120):
    return subprocess.run(
        [CORDEE, *args], env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


ALL_REDUCE = textwrap.dedent("""
    import datetime, json, os, torch, torch.distributed as dist
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    t = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(t)
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "OMP_NUM_THREADS")
    # one write(2) per line: ranks share the pipe, and print() writes text and newline apart
    os.write(1, (json.dumps({**{k: os.environ[k] for k in keys}, "sum": t.item(),
                      "cpus": sorted(os.sched_getaffinity(0))}) + "\\n").encode())
    dist.destroy_process_group()
""")


def start_two_ready_ranks(code: str) -> subprocess.Popen:
    """cordee launch --nproc-per-node 2 of `code`, once both ranks have printed 'ready'."""
    p = subprocess.Popen(
        [CORDEE, "launch", "--profile", "none", "--nproc-per-node", "2", "--", PY, "-c", code],
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert [p.stdout.readline().strip() for _ in range(2)] == ["ready", "ready"]
    return p


def test_local_ranks_all_reduce_over_gloo():
    r = run(["launch", "--profile", "none", "--nproc-per-node", "2", "--", PY, "-c", ALL_REDUCE])
    assert r.returncode == 0, r.stderr
    views = sorted((json.loads(line) for line in r.stdout.splitlines()), key=lambda v: v["RANK"])
    assert [v["RANK"] for v in views] == ["0", "1"]
    assert {v["WORLD_SIZE"] for v in views} == {"2"} and {v["LOCAL_WORLD_SIZE"] for v in views} == {"2"}
    assert {v["sum"] for v in views} == {3.0}
    assert {v["MASTER_ADDR"] for v in views} == {"127.0.0.1"}
    if len(os.sched_getaffinity(0)) >= 2:  # CPU ranks get disjoint slices of the cores
        assert not set(views[0]["cpus"]) & set(views[1]["cpus"])
        assert int(views[0]["OMP_NUM_THREADS"]) == len(views[0]["cpus"])


def test_failing_rank_stops_the_others_and_gives_its_exit_code(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys, time
        open(os.path.join({str(tmp_path)!r}, os.environ["RANK"]), "w").write(str(os.getpid()))
        if os.environ["RANK"] == "1":
            time.sleep(0.5); sys.exit(7)
        time.sleep(120)
    """)
    t0 = time.monotonic()
    r = run(["launch", "--profile", "none", "--nproc-per-node", "3", "--grace", "5", "--", PY, "-c", code])
    elapsed = time.monotonic() - t0
    assert r.returncode == 7, r.stderr
    assert elapsed < 30, f"step took {elapsed:.1f} s: the other ranks were not stopped"
    assert "rank 1 (local 1" in r.stderr and "exited with code 7" in r.stderr
    for rank in ("0", "2"):
        pid = int((tmp_path / rank).read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_single_rank_execs_the_command():
    # exec, not a child: the program's pid is cordee's pid, so Slurm's signals reach it directly.
    p = subprocess.Popen(
        [CORDEE, "launch", "--profile", "none", "--", PY, "-c", "import os; print(os.getpid())"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = p.communicate(timeout=60)
    assert int(out.strip()) == p.pid


def test_signal_reaches_the_program(tmp_path):
    flag = tmp_path / "got-usr2"
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        signal.signal(signal.SIGUSR2, lambda *a: (open({str(flag)!r}, "w").write("yes"), sys.exit(0)))
        os.write(1, b"ready\\n")  # one write: two ranks' lines never interleave
        time.sleep(60)
    """)
    p = subprocess.Popen(
        [CORDEE, "launch", "--profile", "none", "--", PY, "-c", code],
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGUSR2)
    assert p.wait(timeout=30) == 0
    assert flag.read_text() == "yes"


def test_supervisor_forwards_sigterm(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        def bye(*a):
            open(os.path.join({str(tmp_path)!r}, os.environ["RANK"]), "w").write("term"); sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        os.write(1, b"ready\\n")  # one write: two ranks' lines never interleave
        time.sleep(60)
    """)
    p = start_two_ready_ranks(code)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    assert sorted(f.name for f in tmp_path.iterdir()) == ["0", "1"]


def test_user_values_win_and_are_reported():
    r = run(
        ["launch", "--profile", "none", "--", PY, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
        env=clean_env(OMP_NUM_THREADS="3"),
    )
    assert r.returncode == 0 and r.stdout.strip() == "3"
    assert "kept user's OMP_NUM_THREADS=3" in r.stderr


@pytest.mark.parametrize(
    "args, env, fragment",
    [
        (
            ["launch", "--", PY, "-c", "pass"],
            {"SLURM_PROCID": "x", "SLURM_STEP_ID": "0"},
            "SLURM_PROCID='x' is not an integer",
        ),
        (
            ["launch", "--", PY, "-c", "pass"],
            {
                "SLURM_PROCID": "0",
                "SLURM_STEP_ID": "0",
                "SLURM_LOCALID": "0",
                "SLURM_NTASKS": "2",
                "SLURM_NNODES": "2",
                "SLURM_NODEID": "0",
                "SLURM_STEP_NODELIST": "n[1-",
                "SLURM_JOB_ID": "1",
            },
            "nodelist",
        ),
        (["launch", "--profile", "no-such-profile", "--", PY, "-c", "pass"], {}, "no-such-profile"),
        (["launch", "--", "no-such-command-xyz"], {}, "command not found: no-such-command-xyz"),
        (["launch"], {}, "no command given"),
        (["launch", "--nproc-per-node", "0", "--", PY], {}, "0 is not in 1..1024"),
        (["launch", "--bogus", "--", PY], {}, "--bogus"),
        (["nonsense-verb"], {}, "no such command 'nonsense-verb'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, env, fragment):
    r = run(args, env=clean_env(**env))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert any(fragment in line for line in lines), r.stderr
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr


def test_launch_errors_name_the_node_and_task():
    env = clean_env(SLURM_PROCID="3", SLURM_STEP_ID="0")  # SLURM_LOCALID etc. missing
    r = run(["launch", "--", PY, "-c", "pass"], env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == f"cordee: error: {os.uname().nodename} (task 3): SLURM_LOCALID is not set"


def test_ranks_die_with_a_killed_supervisor(tmp_path):
    """SIGKILL leaves cordee no chance to forward anything: the kernel must end the ranks."""
    code = textwrap.dedent(f"""
        import os, time
        open(os.path.join({str(tmp_path)!r}, os.environ["RANK"]), "w").write(str(os.getpid()))
        os.write(1, b"ready\\n")  # one write: two ranks' lines never interleave
        time.sleep(120)
    """)
    p = start_two_ready_ranks(code)
    pids = [int((tmp_path / r).read_text()) for r in ("0", "1")]
    p.kill()
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
                # a killed child stays a zombie until reaped by init: read its state
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except (ProcessLookupError, FileNotFoundError):
                break
            assert time.monotonic() < deadline, f"rank pid {pid} outlived its killed supervisor"
            time.sleep(0.1)


def test_dry_run_prints_the_plan_and_starts_nothing():
    env = clean_env(
        NCCL_CROSS_NIC="0",
        SLURM_JOB_ID="77",
        SLURM_STEP_ID="1",
        SLURM_PROCID="3",
        SLURM_LOCALID="1",
        SLURM_NTASKS="4",
        SLURM_NNODES="2",
        SLURM_NODEID="1",
        SLURM_STEP_NODELIST="nid[001-002]",
        SLURM_TASKS_PER_NODE="2(x2)",
    )
    r = run(["launch", "--dry-run", "--profile", "slingshot-cscs", "--", "false"], env=env)
    assert r.returncode == 0, r.stderr  # `false` never ran
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cordee.launch/1" and doc["command"] == ["false"]
    assert doc["profile"] == "slingshot-cscs" and doc["launch"]["master_addr"] == "nid001"
    (rank,) = doc["ranks"]
    assert (rank["rank"], rank["local_rank"]) == (3, 1)
    env_by_name = {e["name"]: e for e in rank["env"]}
    assert env_by_name["RANK"]["value"] == "3" and env_by_name["MASTER_PORT"]["action"] == "set"
    assert env_by_name["NCCL_CROSS_NIC"] == {
        **env_by_name["NCCL_CROSS_NIC"],
        "value": "0",
        "action": "kept-user",
        "proposed": "1",
    }
    assert env_by_name["NCCL_PROTO"]["action"] == "set" and "nccl" in env_by_name["NCCL_PROTO"]["source"]
