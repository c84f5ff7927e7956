"""`cordee preflight` standalone on this machine: real rank processes (CPU, gloo), the real side
channel, real faults (a check that hangs, a rank that stops or kills itself, wrong data).

Faults are checks injected through the test-only switch CORDEE_PREFLIGHT_REGISTRY=MODULE:FUNCTION
(this module, imported by each rank from tests/); the wrong-data fault is the documented switch
CORDEE_PREFLIGHT_FAULT. The side channel's own rules (bounded lines, duplicate hellos, a lost
collector) are tested in-process with real sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from launchvars import clean_env as launch_free

from cordee.preflight.results import Check, Result

CORDEE = str(Path(sys.executable).with_name("cordee"))
TESTS = str(Path(__file__).resolve().parent)
HOST = os.uname().nodename
SCHEMA = Path(__file__).resolve().parents[1] / "platform/cordee/preflight/schema/preflight.schema.json"


# --- checks injected into the ranks (CORDEE_PREFLIGHT_REGISTRY=test_preflight_runner:NAME) ------


def _on(rank: int, action):
    def run(ctx):
        if ctx.rank == rank:
            action()
        return [Result("test.ok", "ok", detail="passed")]

    return run


def _forever():
    while True:
        time.sleep(1)


def hang_in_check(level):  # rank 1 hangs; its check's timeout (3 s) ends the run
    return [Check("test.hang", "rank", "quick", 3.0, _on(1, _forever), needs_torch=False)]


def hang_past_run(level):  # rank 1 hangs in a check with a long timeout: the run's --timeout ends it
    return [Check("test.hang", "rank", "quick", 600.0, _on(1, _forever), needs_torch=False)]


def stop_self(level):
    stop = _on(1, lambda: os.kill(os.getpid(), signal.SIGSTOP))
    return [Check("test.stop", "rank", "quick", 600.0, stop, needs_torch=False)]


def kill_self(level):
    kill = _on(1, lambda: os.kill(os.getpid(), signal.SIGKILL))
    return [Check("test.kill", "rank", "quick", 600.0, kill, needs_torch=False)]


def _slow(ctx):
    time.sleep(60)
    return [Result("test.slow", "ok")]


def slow_everywhere(level):  # every rank busy for a while: time to stop the collector
    return [Check("test.slow", "rank", "quick", 600.0, _slow, needs_torch=False)]


def quick_and_modules(level):
    """The real quick checks, then one that reports which heavy modules the rank has loaded."""
    from cordee.preflight import registry

    def modules(ctx):
        loaded = sorted(m for m in ("torch", "numpy") if m in sys.modules)
        return [Result("test.modules", "ok", detail=",".join(loaded) or "none", data={"loaded": loaded})]

    return [
        *registry.quick_checks(),
        Check("test.modules", "rank", "quick", 10.0, modules, needs_torch=False),
    ]


# --- helpers ---------------------------------------------------------------------------------


def clean_env(**extra) -> dict[str, str]:
    return launch_free(path=TESTS, **extra)


def preflight(args, *, registry=None, timeout=120, **env):
    extra = {"CORDEE_PREFLIGHT_REGISTRY": f"test_preflight_runner:{registry}"} if registry else {}
    t0 = time.monotonic()
    cp = subprocess.run(
        [CORDEE, "preflight", *args],
        env=clean_env(**extra, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return cp, time.monotonic() - t0


def read_doc(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert doc["schema"] == "cordee.preflight/1"
    return doc


def errors_of(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r["status"] == "error"]


def no_rank_left(marker: str) -> None:
    """No rank process of the run outlived it (the parent kills them all)."""
    deadline = time.monotonic() + 10
    while True:
        left = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in env:
                left.append(pid)
        if not left:
            return
        assert time.monotonic() < deadline, f"rank processes left behind: {left}"
        time.sleep(0.2)


# --- the real checks -------------------------------------------------------------------------


def test_standard_level_on_cpu_ranks_passes_and_its_json_validates(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    cp, _ = preflight(["--nproc", "3", "--json", str(out), "--junit", str(junit)], timeout=180)
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    doc = read_doc(out)
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["system"] == "cpu-ci" and doc["ranks"] == 3 and doc["exit_code"] == 0
    checks = {r["check"] for r in doc["results"]}
    for op in ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "sendrecv"):
        assert f"collective.{op}.intra" in checks, checks
    assert {"compute.gemm", "memory.copy", "straggler.work", "straggler"} <= checks
    gemm = [r for r in doc["results"] if r["check"] == "compute.gemm"]
    assert sorted(r["rank"] for r in gemm) == [0, 1, 2]  # every rank measured, each named
    assert doc["bad_nodes"] == [] and doc["exclude"] == ""
    assert "<testsuites" in junit.read_text()
    # progress: one line per check on stderr as it completes, then the table on stdout
    assert "collective.all_reduce.intra" in cp.stderr and "summary:" in cp.stdout


def test_wrong_data_is_caught_and_its_rank_named(tmp_path):
    out = tmp_path / "r.json"
    args = ["--nproc", "2", "--checks", "collective.all_gather.*", "--json", str(out)]
    cp, _ = preflight(args, CORDEE_PREFLIGHT_FAULT="wrong-data:1")
    assert cp.returncode == 2, f"{cp.stdout}\n{cp.stderr}"
    (bad,) = [r for r in read_doc(out)["results"] if r["status"] == "fail"]
    assert bad["check"] == "collective.all_gather.intra"
    assert bad["data"]["wrong_ranks"] == [1] and f"rank 1 on {HOST}" in bad["detail"]


def test_quick_level_imports_no_torch(tmp_path):
    out = tmp_path / "r.json"
    cp, _ = preflight(["--level", "quick", "--nproc", "2", "--json", str(out)], registry="quick_and_modules")
    assert cp.returncode in (0, 1), f"{cp.stdout}\n{cp.stderr}"
    doc = read_doc(out)
    seen = [r for r in doc["results"] if r["check"] == "test.modules"]
    assert len(seen) == 2 and all(r["data"]["loaded"] == [] for r in seen), seen
    # node checks ran once (local rank 0), not once per rank
    assert len([r for r in doc["results"] if r["check"] == "env.profile"]) == 1


# --- faults: the run ends in time, naming the rank -------------------------------------------


@pytest.mark.parametrize(
    ("registry", "timeout", "expected"),
    [
        ("hang_in_check", 60, f"rank 1 on {HOST}: check test.hang did not finish within its timeout of 3 s"),
        ("hang_past_run", 6, f"did not finish within its timeout of 6 s: rank 1 on {HOST} was still running"),
        ("stop_self", 60, f"rank 1 on {HOST} stopped responding (no heartbeat for"),
        ("kill_self", 60, f"rank 1 on {HOST} was killed by SIGKILL during test.kill"),
    ],
)
def test_a_faulty_rank_ends_the_run_with_3_naming_it(tmp_path, registry, timeout, expected):
    out = tmp_path / "r.json"
    tag = f"{registry}-{os.getpid()}"  # in every rank's environment: finds leftovers
    args = ["--level", "quick", "--nproc", "3", "--timeout", str(timeout), "--stall-timeout", "2"]
    cp, took = preflight([*args, "--json", str(out)], registry=registry, CORDEE_TEST_MARKER=tag)
    assert cp.returncode == 3, f"{cp.stdout}\n{cp.stderr}"
    assert took < timeout + 10, f"took {took:.1f} s"
    errors = errors_of(read_doc(out))
    assert any(expected in e["detail"] and e["rank"] == 1 and e["node"] == HOST for e in errors), errors
    assert expected in cp.stderr  # said on the terminal too, one line
    no_rank_left(f"CORDEE_TEST_MARKER={tag}")


def test_ranks_exit_3_when_the_collector_is_lost(tmp_path):
    """Stop the collector (the standalone parent): every rank names it and exits 3 by itself."""
    p = subprocess.Popen(
        [CORDEE, "preflight", "--level", "quick", "--nproc", "2", "--stall-timeout", "2"],
        env=clean_env(CORDEE_PREFLIGHT_REGISTRY="test_preflight_runner:slow_everywhere"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ranks = _children(p.pid, 2)
        time.sleep(1.0)  # connected, beating
        p.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 15
        while any(_alive(r) for r in ranks):
            assert time.monotonic() < deadline, "ranks did not notice the lost collector"
            time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGCONT)
        p.kill()
        _, err = p.communicate(timeout=30)
    lost = [line for line in err.splitlines() if "stopped responding" in line and "collector" in line]
    assert len(lost) == 2 and all(f"cordee preflight on {HOST}" in line for line in lost), err


def _children(pid: int, n: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        if len(kids) >= n:
            return [int(k) for k in kids]
        time.sleep(0.1)
    raise AssertionError(f"{n} ranks did not start")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- bad input: one line, exit 2 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--system", "no-such-system"], {}, "no-such-system"),
        (["--system", "h200-sxm"], {}, "this node has none"),
        (["--level", "extreme"], {}, "extreme"),
        (["--thresholds", "/nonexistent/p.toml"], {}, "/nonexistent/p.toml"),
        (["--checks", "nothing.*"], {}, "nothing.*"),
        (["--nproc", "0"], {}, "--nproc"),
        ([], {"CORDEE_PREFLIGHT_FAULT": "wrong-data:x"}, "CORDEE_PREFLIGHT_FAULT"),
        (["baseline", "/nonexistent/r.json"], {}, "/nonexistent/r.json"),
        (["--json", "/nonexistent/dir/r.json"], {}, "/nonexistent/dir"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, env, says):
    cp, _ = preflight(args, timeout=60, **env)
    assert cp.returncode == 2, f"{cp.stdout}\n{cp.stderr}"
    assert len(cp.stderr.strip().splitlines()) == 1 and says in cp.stderr, cp.stderr


# --- the side channel, in-process ------------------------------------------------------------


def _collector(n, **kw):
    from cordee.preflight.collector import Collector

    c = Collector(
        n, stall_timeout_s=kw.pop("stall", 2.0), timeout_s=kw.pop("timeout", 20.0), host="127.0.0.1", **kw
    )
    return c, c.start()


def _raw(port: int, *lines: bytes):
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    for line in lines:
        s.sendall(line)
    return s


def test_an_over_long_line_from_a_rank_aborts_naming_it():
    from cordee.preflight.sidechannel import MAX_LINE_UP

    c, port = _collector(1)
    hello = b'{"t":"hello","rank":0,"node":"n1","pid":1,"local_rank":0,"checks":["x"]}\n'
    s = _raw(port, hello, b'{"t":"hb","pad":"' + b"x" * (MAX_LINE_UP + 10))
    outcome = c.wait()
    c.finish(3)
    s.close()
    assert len(outcome.errors) == 1 and "rank 0 on n1 sent a message longer than" in outcome.errors[0].detail


def test_a_second_hello_for_a_rank_is_refused():
    c, port = _collector(2)
    hello = b'{"t":"hello","rank":1,"node":"n1","pid":1,"local_rank":0,"checks":[]}\n'
    a = _raw(port, hello)
    b = _raw(port, hello)  # not one of ours: closed, the run goes on
    time.sleep(0.5)
    assert b.recv(100) == b""
    assert 1 in c.ranks and not c._outcome.is_set()
    c.abort([Result("preflight", "error", detail="test over")])
    assert c.wait().errors[0].detail == "test over"
    c.finish(3)
    a.close()


def test_progress_is_announced_once_every_planned_rank_reported():
    from cordee.preflight.sidechannel import Reporter

    seen = []
    c, port = _collector(2, on_check_done=lambda check, results: seen.append((check, len(results))))
    codes = {}

    def rank(r):
        rep = Reporter(r, "n1", r, stall_timeout_s=5)
        rep.connect("127.0.0.1", port, time.monotonic() + 5, ["a", "b"] if r == 0 else ["a"])
        for check in ["a", "b"] if r == 0 else ["a"]:
            rep.begin(check, 5)
            rep.result(check, [Result(check, "ok", "n1", r)])
        codes[r] = rep.end()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    outcome = c.wait()
    c.finish(1)
    for t in threads:
        t.join(10)
    assert sorted(seen) == [("a", 2), ("b", 1)] and codes == {0: 1, 1: 1}
    assert outcome.errors == [] and len(outcome.results) == 3


# --- cordee launch --preflight quick ---------------------------------------------------------


def failing_gpu(level):
    def run(ctx):
        return [Result("gpu.ecc", "fail", detail="GPU 0: 3 uncorrected ECC errors")]

    return [Check("gpu.health", "node", "quick", 5.0, run, needs_torch=False)]


def test_launch_gate_runs_the_command_after_a_passing_quick_level():
    cmd = [
        CORDEE,
        "launch",
        "--profile",
        "none",
        "--preflight",
        "quick",
        "--",
        sys.executable,
        "-c",
        "print('ran')",
    ]
    cp = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == "ran", cp.stderr
    assert f"preflight quick on {HOST}:" in cp.stderr


def test_launch_gate_refuses_to_start_on_a_failure(tmp_path):
    marker = tmp_path / "started"
    code = f"open({str(marker)!r}, 'w').close()"
    cmd = [CORDEE, "launch", "--profile", "none", "--preflight", "quick", "--", sys.executable, "-c", code]
    env = clean_env(CORDEE_PREFLIGHT_REGISTRY="test_preflight_runner:failing_gpu")
    cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2 and not marker.exists(), cp.stderr
    (line,) = cp.stderr.strip().splitlines()
    assert f"{HOST}: preflight quick: gpu.ecc fail: GPU 0: 3 uncorrected ECC errors" in line
