"""The bench engines on the CPU: real gloo process groups across real processes started by
`cordee launch --nproc-per-node N`, the real CLI, and the fault switch that makes checks fail.

One 3-rank run (module fixture) sweeps every op at several sizes, odd ones included, in two
dtypes, then once more with CORDEE_PREFLIGHT_FAULT=wrong-data:2; the tests read its rows.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from launchvars import clean_env

from cordee.bench import collectives as engine
from cordee.errors import InputError

CORDEE = str(Path(sys.executable).with_name("cordee"))
PY = sys.executable
SIZES = [4, 1000, 65536]  # 4 is less than one element per rank; 1000 and 65536 do not split in 3

WORKER = textwrap.dedent("""
    import json, os, sys, time
    from cordee.bench import collectives as c, group as g

    def emit(doc):  # one write per line: the ranks share the pipe
        os.write(1, (json.dumps(doc) + "\\n").encode())

    mode, timeout = sys.argv[1], float(sys.argv[2])
    info = g.init_group(timeout_s=60, device="cpu")
    if mode == "sweep":
        sizes = json.loads(sys.argv[3])
        clean = [r.as_dict() for dt in ("float32", "bf16") for op in c.OPS
                 for r in c.sweep(op, sizes, device="cpu", dtype=dt, iters=2, warmup=1)]
        fault = c.fault_from_env(os.environ)
        faulty = [r.as_dict() for op in c.OPS
                  for r in c.sweep(op, [1000], device="cpu", iters=1, warmup=0, fault=fault)]
        emit({"rank": info.rank, "clean": clean, "faulty": faulty})
        g.destroy()
        os._exit(0)  # as `cordee bench` leaves: gloo's threads can abort Python's teardown (134)
    # a peer that leaves after the first size ("exit") or stops answering ("stall"), on a
    # subgroup of its own timeout (the world's stays long: a slow start is no failure)
    sub = g.cpu_group(timeout_s=timeout)
    sizes = [1024] if info.rank == 1 else [1024, 2048, 4096]
    t0 = time.monotonic()
    try:
        c.sweep("all_reduce", sizes, group=sub, device="cpu", iters=2, warmup=1, timeout_s=timeout)
    except c.CollectiveError as e:
        emit({"rank": info.rank, "error": str(e), "after_s": time.monotonic() - t0, "code": e.exit_code})
        os._exit(e.exit_code)  # past the teardown of the broken group, which aborts now and then
    if mode == "exit":
        os._exit(0)
    time.sleep(120)
""")


def launch(nproc: int, argv: list[str], timeout: float = 120, **env) -> subprocess.CompletedProcess:
    cmd = [CORDEE, "launch", "--profile", "none", "--nproc-per-node", str(nproc), "--", *argv]
    return subprocess.run(cmd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout)


def lines(stdout: str) -> list[dict]:
    return sorted((json.loads(x) for x in stdout.splitlines() if x.startswith("{")), key=lambda d: d["rank"])


@pytest.fixture(scope="module")
def three_ranks():
    r = launch(3, [PY, "-c", WORKER, "sweep", "60", json.dumps(SIZES)], CORDEE_PREFLIGHT_FAULT="wrong-data:2")
    assert r.returncode == 0, r.stderr[-3000:]
    views = lines(r.stdout)
    assert [v["rank"] for v in views] == [0, 1, 2]
    return views


def rows(views, kind, **match):
    return [x for x in views[0][kind] if all(x[k] == v for k, v in match.items())]


def test_every_op_verifies_at_every_size_in_both_dtypes(three_ranks):
    clean = three_ranks[0]["clean"]
    assert len(clean) == 2 * len(engine.OPS) * len(SIZES)
    assert {(x["op"], x["dtype"]) for x in clean} == {
        (op, dt) for op in engine.OPS for dt in ("float32", "bfloat16")
    }
    for x in clean:
        assert x["checked"] and x["wrong"] == 0 and x["wrong_ranks"] == [], x
        assert x["ranks"] == 3 and x["time_us"] > 0
    # every rank ends with the same rows: times are the slowest rank's, counts summed over ranks
    assert three_ranks[1]["clean"] == clean and three_ranks[2]["clean"] == clean


def test_sizes_that_do_not_split_are_rounded_and_say_so(three_ranks):
    def sizes(op, dtype):
        return [(x["requested_bytes"], x["bytes"]) for x in rows(three_ranks, "clean", op=op, dtype=dtype)]

    assert sizes("all_gather", "float32") == [(4, 12), (1000, 996), (65536, 65532)]
    assert sizes("alltoall", "bfloat16") == [(4, 6), (1000, 996), (65536, 65532)]
    assert sizes("all_reduce", "float32") == [(s, s) for s in SIZES]
    assert sizes("sendrecv", "bfloat16") == [(s, s) for s in SIZES]
    assert all(x["rounded"] == (x["bytes"] != x["requested_bytes"]) for x in three_ranks[0]["clean"])


def test_bandwidths_follow_nccl_tests_definitions(three_ranks):
    factors = {"all_reduce": 4 / 3, "all_gather": 2 / 3, "reduce_scatter": 2 / 3, "alltoall": 2 / 3}
    for x in three_ranks[0]["clean"]:
        assert x["algbw_gbps"] == pytest.approx(x["bytes"] / (x["time_us"] * 1e-6) / 1e9)
        assert x["busbw_gbps"] == pytest.approx(x["algbw_gbps"] * factors.get(x["op"], 1.0))


def test_busbw_factor_table():
    assert engine.busbw_factor("all_reduce", 4) == 1.5
    assert engine.busbw_factor("all_reduce", 1) == 0.0
    assert engine.busbw_factor("all_gather", 4) == 0.75
    assert engine.busbw_factor("reduce_scatter", 8) == 0.875
    assert engine.busbw_factor("alltoall", 2) == 0.5
    assert engine.busbw_factor("sendrecv", 16) == 1.0
    with pytest.raises(InputError, match="broadcast"):
        engine.busbw_factor("broadcast", 2)


def test_fault_switch_fails_the_check_and_names_the_rank(three_ranks):
    faulty = {x["op"]: x for x in three_ranks[0]["faulty"]}
    assert three_ranks[1]["faulty"] == three_ranks[0]["faulty"]
    # 1000 bytes float32: 996 bytes (83 elements per rank) for the split ops, 250 elements otherwise
    assert faulty["all_gather"]["wrong"] == 3 * 83 and faulty["all_gather"]["wrong_ranks"] == [2]
    assert faulty["alltoall"]["wrong"] == 3 * 83 and faulty["alltoall"]["wrong_ranks"] == [2]
    assert faulty["sendrecv"]["wrong"] == 250 and faulty["sendrecv"]["wrong_ranks"] == [2]  # rank 0's
    assert faulty["all_reduce"]["wrong"] == 3 * 250 and faulty["all_reduce"]["wrong_ranks"] == []
    assert faulty["reduce_scatter"]["wrong"] == 3 * 83 and faulty["reduce_scatter"]["wrong_ranks"] == []


def test_fault_variable_parsing():
    assert engine.fault_from_env({}) is None
    assert engine.fault_from_env({"CORDEE_PREFLIGHT_FAULT": "wrong-data:3"}) == engine.Fault("wrong-data", 3)
    both = engine.parse_faults("hang:1,wrong-data:0", known=("hang", "wrong-data"))
    assert both == (engine.Fault("hang", 1), engine.Fault("wrong-data", 0))
    for bad in ("wrong-data", "wrong-data:x", "wrong-data:-1", "hang:1", "wrong-data:1,"):
        with pytest.raises(InputError, match="CORDEE_PREFLIGHT_FAULT"):
            engine.fault_from_env({"CORDEE_PREFLIGHT_FAULT": bad})


@pytest.mark.parametrize("mode, timeout", [("exit", 30), ("stall", 2)])
def test_a_lost_peer_makes_the_others_raise_within_the_timeout(mode, timeout):
    r = launch(2, [PY, "-c", WORKER, mode, str(timeout)], timeout=90)  # a hang ends here, failing
    assert r.returncode == 3, r.stderr[-3000:]
    (report,) = lines(r.stdout)  # rank 0 only; rank 1 left (exit) or was stopped (stall)
    assert report["rank"] == 0 and report["code"] == 3
    assert "all_reduce of 2048 bytes (float32, 2 ranks) on rank 0" in report["error"]
    assert report["after_s"] < timeout + 5  # the first size, then at most the group's timeout


def test_cli_collectives_json_under_launch_prints_one_doc_from_rank_0():
    cli = [CORDEE, "bench", "collectives", "--json", "--sizes", "4100", "--iters", "2", "--warmup", "1"]
    r = launch(2, cli)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)  # exactly one document on stdout
    assert doc["schema"] == "cordee.bench/1" and doc["benchmark"] == "collectives" and doc["ok"]
    assert doc["ranks"] == 2 and doc["backend"] == "gloo" and doc["device"] == "cpu"
    split = ("all_gather", "reduce_scatter", "alltoall")  # 4100 bytes: 4096 over 2 ranks x 4 bytes
    expected = [(op, 4096 if op in split else 4100) for op in engine.OPS]
    assert [(x["op"], x["bytes"]) for x in doc["rows"]] == expected
    assert all(x["checked"] and x["wrong"] == 0 for x in doc["rows"])


def test_cli_gemm_on_the_cpu():
    cmd = [CORDEE, "bench", "gemm", "--device", "cpu", "--json", "--sizes", "64,96", "--iters", "3"]
    r = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cordee.bench/1" and doc["benchmark"] == "gemm" and doc["device"] == "cpu"
    assert [(x["n"], x["dtype"], x["iters"]) for x in doc["rows"]] == [(64, "float32", 3), (96, "float32", 3)]
    for x in doc["rows"]:
        assert x["tflops"] == pytest.approx(2 * x["n"] ** 3 / x["seconds"] / 1e12)


def test_copy_engine_and_references_on_the_cpu():
    from cordee.bench import gemm, hbm

    copy = hbm.copy_bandwidth("cpu", nbytes=1 << 20, iters=3, warmup=1)
    plain = hbm.torch_copy_reference("cpu", nbytes=1 << 20, iters=3, warmup=1)
    for x in (copy, plain):
        assert x["verified"] and x["bytes"] == 1 << 20
        assert x["gbps"] == pytest.approx(2 * x["bytes"] / x["seconds"] / 1e9)
    ref = gemm.torch_matmul_reference("cpu", n=32, iters=2, warmup=0)
    assert ref["n"] == 32 and ref["dtype"] == "float32" and ref["tflops"] > 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["collectives", "--sizes", "0"], "'0' must be 1 byte"),
        (["collectives", "--ops", "all_reduce,bcast"], "'bcast' is not one of all_reduce"),
        (["collectives", "--dtype", "fp8"], "'fp8' is not one of float32"),
        (["gemm", "--sizes", "64,x"], "'x' is not a matrix order"),
        (["hbm", "--sizes", "1Q"], "'1Q' is not a size"),
        (["hbm", "--device", "cpu", "--sizes", "64G"], "needs 137438953472 bytes on cpu, which has"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    r = subprocess.run([CORDEE, "bench", *args], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
