"""The bench engines on real GPUs (runs on the lent GPU node; skipped where torch sees no GPU):
CUDA-event timers, bf16 GEMM, device copy, and the collective engine through NCCL with its
checking pass and fault switch, in real rank processes (`python -m cordee launch`)."""

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU (runs on the GPU node)"),
]
CORDEE = [sys.executable, "-m", "cordee"]  # works where the console script is not on PATH
# Sanity bounds far above any GPU of today (H200: 989 dense bf16 TFLOP/s, 4.8 TB/s): a timer that
# measured nothing (events on another stream) would report far more.
MAX_TFLOPS, MAX_GBPS = 5000.0, 50000.0


def env(**extra):
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "TORCHELASTIC", "MASTER_", "CORDEE_"))
        and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    }
    keep.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off on the lent machines
    return {**keep, **extra}


def in_fresh_process(case) -> None:
    """Run `case` (a module-level function) in a spawned interpreter: CUDA used in pytest's own
    process keeps a context (about 0.7 GiB) for the whole session, which the GPU preflight tests
    then rightly report as a foreign process on the GPU."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(case)


def gemm_case() -> None:
    from cordee.bench import gemm

    fast = gemm.gemm("cuda:0", n=4096, iters=10, warmup=3)
    plain = gemm.torch_matmul_reference("cuda:0", n=4096, iters=10, warmup=3)
    for r in (fast, plain):
        assert r["dtype"] == "bfloat16" and r["n"] == 4096
        assert 0 < r["tflops"] < MAX_TFLOPS
        assert r["tflops"] == pytest.approx(2 * 4096**3 / r["seconds"] / 1e12)
    assert fast["timing"] == "cuda events"


def test_gemm_bf16_engine_and_reference():
    in_fresh_process(gemm_case)


def copy_case() -> None:
    from cordee.bench import hbm

    r = hbm.copy_bandwidth("cuda:0", nbytes=256 << 20, iters=10, warmup=2)
    assert r["verified"] and 0 < r["gbps"] < MAX_GBPS


def test_device_copy_is_verified_and_bounded():
    in_fresh_process(copy_case)


def stuck_kernel_case() -> None:
    from cordee.bench import timing

    torch.cuda._sleep(int(3e9))  # about 2 s of GPU clock cycles on the current stream
    t0 = time.monotonic()
    with pytest.raises(timing.BenchTimeout, match="stuck kernel"):
        timing.wait_device("cuda:0", time.monotonic() + 0.2, "stuck kernel")
    assert time.monotonic() - t0 < 1.5
    torch.cuda.synchronize()


def test_a_stuck_kernel_becomes_an_error_not_a_hang():
    if not hasattr(torch.cuda, "_sleep"):
        pytest.skip("torch.cuda._sleep is not available in this torch")
    in_fresh_process(stuck_kernel_case)


ONE_RANK = textwrap.dedent("""
    import json, os
    from cordee.bench import collectives as c, group as g
    info = g.init_group(timeout_s=120)
    assert info.backend == "nccl", info
    rows = [r.as_dict() for dt in ("bf16", "float32") for op in c.OPS[:4]
            for r in c.sweep(op, [4, 1000, (1 << 20) + 2], device=info.device, dtype=dt, iters=3, warmup=1)]
    fault = c.fault_from_env(os.environ)
    faulty = c.sweep("all_gather", [4096], device=info.device, iters=1, warmup=0, fault=fault)
    print(json.dumps({"rows": rows, "faulty": faulty[0].as_dict()}))
    g.destroy()
""")


def test_nccl_sweep_on_one_gpu_checks_every_op_and_the_fault():
    r = subprocess.run(
        [sys.executable, "-c", ONE_RANK],
        env=env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", CORDEE_PREFLIGHT_FAULT="wrong-data:0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(doc["rows"]) == 2 * 4 * 3
    for row in doc["rows"]:
        assert row["checked"] and row["wrong"] == 0 and row["time_us"] > 0, row
    assert doc["faulty"]["wrong"] == 4096 // 2 and doc["faulty"]["wrong_ranks"] == [0]  # bf16 elements


def test_cli_collectives_on_every_gpu_of_the_node():
    gpus = torch.cuda.device_count()
    cmd = [*CORDEE, "launch", "--profile", "none", "--nproc-per-node", str(gpus), "--"]
    cmd += [*CORDEE, "bench", "collectives", "--json", "--sizes", "1M,64M", "--iters", "5"]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["backend"] == "nccl" and doc["ranks"] == gpus and doc["ok"]
    ops = {x["op"] for x in doc["rows"]}
    assert ops == (
        {"all_reduce", "all_gather", "reduce_scatter", "alltoall"} | ({"sendrecv"} if gpus > 1 else set())
    )
    for x in doc["rows"]:
        assert x["dtype"] == "bfloat16" and x["wrong"] == 0 and x["busbw_gbps"] < MAX_GBPS


def test_two_gpus_fault_names_the_rank():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, torch sees {torch.cuda.device_count()}")
    cmd = [*CORDEE, "launch", "--profile", "none", "--nproc-per-node", "2", "--"]
    cmd += [*CORDEE, "bench", "collectives", "--json", "--sizes", "1M", "--ops", "all_gather,sendrecv"]
    r = subprocess.run(
        cmd, env=env(CORDEE_PREFLIGHT_FAULT="wrong-data:1"), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert [x["wrong_ranks"] for x in doc["rows"]] == [[1], [1]]


def test_cli_gemm_and_hbm_default_to_the_gpu():
    for verb, extra in (("gemm", ["--sizes", "2048"]), ("hbm", ["--sizes", "64M"])):
        r = subprocess.run(
            [*CORDEE, "bench", verb, "--json", *extra], env=env(), capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        assert doc["device"] == "cuda:0" and doc["ok"], doc
