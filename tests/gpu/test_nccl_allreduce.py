"""NCCL all_reduce through cordee's ctypes bindings only (libnccl + the CUDA driver API, no torch),
on real GPUs: runs on the lent GPU node, skipped where no CUDA driver or device exists.

Two processes, one GPU each: the parent makes the unique id (it hosts NCCL's bootstrap root) and
hands it to both ranks; each rank joins with ncclCommInitRank (blocking) or ncclCommInitRankConfig
(non-blocking, with a deadline), all_reduces float32 device buffers and checks every element on
the host. One process alone (nranks 1) covers init without any peer. Each rank prints one JSON
line; on failure the assertion shows every rank's stderr (NCCL_DEBUG=WARN unless set).
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import cordee
from cordee.interconnect import cuda
from cordee.interconnect.nccl import Nccl

REASON = cuda.unavailable_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        REASON is not None, reason=f"no usable CUDA GPU here ({REASON}); runs on the GPU node"
    ),
]
PLATFORM_DIR = str(Path(cordee.__file__).resolve().parents[1])
COUNT = 1 << 20  # 4 MiB of float32 per buffer: several NCCL channels, still quick to check on the host
RANK_TIMEOUT_S = 300

WORKER = textwrap.dedent("""
    import json, os, struct, sys, time
    from array import array
    from cordee.interconnect.cuda import CudaDriver
    from cordee.interconnect.nccl import Nccl

    def bits(x):
        return struct.unpack("I", struct.pack("f", x))[0]

    cfg = json.loads(sys.argv[1])
    rank, nranks, dev, n = cfg["rank"], cfg["nranks"], cfg["device"], cfg["count"]
    cu = CudaDriver()
    cu.use_device(dev)
    lib = Nccl()
    uid = bytes.fromhex(cfg["uid"]) if cfg["uid"] else lib.unique_id()
    # element i of rank r: (i % 1024) + 1000 r, so a wrong offset or a missing rank shows
    send, recv, inplace = (cu.mem_alloc(4 * n) for _ in range(3))
    cu.memcpy_htod(send, array("f", [(i % 1024) + 1000.0 * rank for i in range(n)]).tobytes())
    cu.memset_d32(recv, bits(-1.0), n)
    cu.memset_d32(inplace, bits(rank + 1.0), n)
    stream = cu.stream_create()
    t0 = time.monotonic()
    comm = lib.comm_init_rank(nranks, uid, rank, timeout_s=cfg["timeout_s"])
    init_s = time.monotonic() - t0
    with comm:
        seen = {"count": comm.count, "user_rank": comm.user_rank, "cu_device": comm.cu_device}
        comm.all_reduce(send, recv, n, "float32", "sum", stream)
        comm.all_reduce(inplace, inplace, n, "float32", "max", stream)
        cu.stream_synchronize(stream, 120)
    got = array("f")
    got.frombytes(cu.memcpy_dtoh(recv, 4 * n))
    offset = 1000.0 * nranks * (nranks - 1) / 2
    bad = [i for i in range(n) if got[i] != nranks * (i % 1024) + offset]
    maxed = set(array("f", cu.memcpy_dtoh(inplace, 4 * n)))
    for p in (send, recv, inplace):
        cu.mem_free(p)
    cu.stream_destroy(stream)
    result = {
        "rank": rank, "device": dev, "pci": cu.pci_bus_id(dev), "nccl": lib.version,
        "nccl_path": lib.path, "init_s": round(init_s, 3), **seen,
        "wrong_elements": len(bad), "first_wrong": [(i, got[i]) for i in bad[:5]],
        "inplace_max_values": sorted(maxed),
    }
    os.write(1, (json.dumps(result) + "\\n").encode())
""")


def run_ranks(nranks: int, timeout_s: float | None) -> list[dict]:
    """Start one process per rank (GPU i for rank i); returns their results in rank order."""
    uid = Nccl().unique_id().hex() if nranks > 1 else ""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [PLATFORM_DIR, os.environ.get("PYTHONPATH")])),
    }
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off on the lent machines
    env.setdefault("NCCL_DEBUG", "WARN")
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for rank in range(nranks):
            cfg = {
                "rank": rank,
                "nranks": nranks,
                "device": rank,
                "count": COUNT,
                "uid": uid,
                "timeout_s": timeout_s,
            }
            out, err = open(f"{tmp}/{rank}.out", "w+"), open(f"{tmp}/{rank}.err", "w+")
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-c", WORKER, json.dumps(cfg)], stdout=out, stderr=err, env=env
                    ),
                    out,
                    err,
                )
            )
        deadline = time.monotonic() + RANK_TIMEOUT_S
        timed_out = False
        for p, _, _ in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                break
        if timed_out:
            for p, _, _ in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
        results, report = [], []
        for rank, (p, out, err) in enumerate(procs):
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            out.close()
            err.close()
            report.append(
                f"--- rank {rank}: exit {p.returncode}\nstdout: {stdout[-1000:]}\nstderr: {stderr[-3000:]}"
            )
            lines = [x for x in stdout.splitlines() if x.startswith("{")]
            if lines:
                results.append(json.loads(lines[-1]))
    diagnostics = "\n".join(report)
    assert not timed_out, f"ranks did not finish within {RANK_TIMEOUT_S} s\n{diagnostics}"
    assert [p.returncode for p, _, _ in procs] == [0] * nranks, diagnostics
    assert len(results) == nranks, diagnostics
    return sorted(results, key=lambda r: r["rank"])


def check(results: list[dict], nranks: int) -> None:
    for r in results:
        assert r["wrong_elements"] == 0, r
        assert r["count"] == nranks and r["user_rank"] == r["rank"] and r["cu_device"] == r["device"], r
        assert r["inplace_max_values"] == [float(nranks)], r  # max over ranks of (rank + 1)
    assert len({r["pci"] for r in results}) == nranks  # one physical GPU per rank
    assert len({tuple(r["nccl"]) for r in results}) == 1


@pytest.mark.parametrize("timeout_s", [None, 120.0], ids=["blocking-init", "nonblocking-init"])
def test_all_reduce_two_processes_one_gpu_each(timeout_s):
    driver = cuda.CudaDriver()
    if driver.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, the driver reports {driver.device_count()}")
    check(run_ranks(2, timeout_s), 2)


@pytest.mark.parametrize("timeout_s", [None, 120.0], ids=["blocking-init", "nonblocking-init"])
def test_all_reduce_single_process_single_rank(timeout_s):
    (result,) = run_ranks(1, timeout_s)
    check([result], 1)
