"""all_reduce of 1 GiB float32 (sum) over 2 GPUs: cordee's ctypes NCCL binding vs torch.distributed.

Target (issue 4): the ctypes path's bus bandwidth within 5% of torch's, i.e. ratio >= 0.95, both
measured in the same run. Both sides are the same experiment: one process per GPU started here
(no torchrun; GPU i for rank i, all GPUs visible to both), the same libnccl (the one torch loads,
found by a probe and given to the ctypes ranks as CORDEE_NCCL_LIBRARY), in-place all_reduce,
WARMUP untimed calls, a small all_reduce as barrier, then ITERS calls between two CUDA events on
the stream the collectives run on. A rank's time is elapsed/ITERS; the collective's time is the
slowest rank's. algbw = bytes/time, busbw = algbw * 2(n-1)/n (nccl-tests' PERFORMANCE.md).
Every element of the result is checked: each call doubles the (equal) values, so after k calls
rank buffers hold n(n+1)/2 * n^(k-1), exact in float32.

Skips with a message and exit 0 where there is no CUDA GPU, fewer than NRANKS, or no torch with
CUDA and NCCL. Exit 1 on a wrong result or a failed rank (their stderr is printed). NCCL_NVLS_ENABLE
defaults to 0 (NVLink multicast stays off on the lent machines).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATFORM_DIR = str(HERE.parents[1] / "platform")
sys.path.insert(0, PLATFORM_DIR)
TARGET_RATIO = 0.95
CHECK_CHUNK = 64 << 20

TORCH_PROBE = """
import json, torch, torch.distributed as dist
ok = torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()
v = torch.cuda.nccl.version() if ok else None
maps = [line.split()[-1] for line in open("/proc/self/maps") if "libnccl" in line.split()[-1]]
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "ok": ok, "nccl": v,
    "nccl_path": maps[0] if maps else None, "gpus": torch.cuda.device_count() if ok else 0,
    "gpu_name": torch.cuda.get_device_name(0) if ok else None}))
"""


def expected_value(nranks: int, calls: int) -> float:
    return nranks * (nranks + 1) / 2 * nranks ** (calls - 1)


def worker_ctypes(cfg: dict) -> dict:
    from cordee.interconnect.cuda import CudaDriver
    from cordee.interconnect.nccl import Nccl

    rank, nranks, n, timeout = cfg["rank"], cfg["nranks"], cfg["count"], cfg["timeout_s"]
    cu = CudaDriver()
    cu.use_device(rank)
    lib = Nccl()
    buf, small = cu.mem_alloc(4 * n), cu.mem_alloc(4)
    cu.memset_d32(buf, struct.unpack("I", struct.pack("f", rank + 1.0))[0], n)
    cu.memset_d32(small, 0, 1)
    stream, start, end = cu.stream_create(), cu.event_create(), cu.event_create()
    with lib.comm_init_rank(nranks, bytes.fromhex(cfg["uid"]), rank) as comm:
        for _ in range(cfg["warmup"]):
            comm.all_reduce(buf, buf, n, "float32", "sum", stream)
        comm.all_reduce(small, small, 1, "float32", "sum", stream)  # barrier
        cu.stream_synchronize(stream, timeout)
        cu.event_record(start, stream)
        for _ in range(cfg["iters"]):
            comm.all_reduce(buf, buf, n, "float32", "sum", stream)
        cu.event_record(end, stream)
        cu.event_synchronize(end, timeout)
        ms = cu.event_elapsed_ms(start, end)
    pattern = struct.pack("f", expected_value(nranks, cfg["warmup"] + cfg["iters"])) * (CHECK_CHUNK // 4)
    correct = True
    for off in range(0, 4 * n, CHECK_CHUNK):
        size = min(CHECK_CHUNK, 4 * n - off)
        correct = correct and cu.memcpy_dtoh(buf + off, size) == pattern[:size]
    return {
        "rank": rank,
        "ms_per_iter": ms / cfg["iters"],
        "correct": correct,
        "nccl": ".".join(map(str, lib.version)),
        "nccl_path": lib.path,
    }


def worker_torch(cfg: dict) -> dict:
    import datetime

    import torch
    import torch.distributed as dist

    rank, nranks, n = cfg["rank"], cfg["nranks"], cfg["count"]
    torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl",
        init_method=f"tcp://127.0.0.1:{cfg['port']}",
        rank=rank,
        world_size=nranks,
        timeout=datetime.timedelta(seconds=cfg["timeout_s"]),
    )
    t = torch.full((n,), float(rank + 1), dtype=torch.float32, device="cuda")
    small = torch.zeros(1, device="cuda")
    for _ in range(cfg["warmup"]):
        dist.all_reduce(t)
    dist.all_reduce(small)  # barrier
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(cfg["iters"]):
        dist.all_reduce(t)
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end)
    correct = bool((t == expected_value(nranks, cfg["warmup"] + cfg["iters"])).all())
    maps = [line.split()[-1] for line in open("/proc/self/maps") if "libnccl" in line.split()[-1]]
    dist.destroy_process_group()
    return {
        "rank": rank,
        "ms_per_iter": ms / cfg["iters"],
        "correct": correct,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "nccl_path": maps[0] if maps else None,
    }


def run_phase(kind: str, cfg: dict, env: dict, timeout_s: float) -> list[dict]:
    """Start one worker per rank; results in rank order. Raises RuntimeError with every rank's
    output on a failure or when the ranks are not done in time (then they are killed)."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for rank in range(cfg["nranks"]):
            out, err = open(f"{tmp}/{rank}.out", "w+"), open(f"{tmp}/{rank}.err", "w+")
            argv = [sys.executable, __file__, "--worker", kind, "--config", json.dumps({**cfg, "rank": rank})]
            procs.append((subprocess.Popen(argv, stdout=out, stderr=err, env=env), out, err))
        deadline, late = time.monotonic() + timeout_s, False
        for p, _, _ in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                late = True
                break
        results, report = [], []
        for rank, (p, out, err) in enumerate(procs):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
            out.seek(0)
            err.seek(0)
            text, errors = out.read(), err.read()
            found = [json.loads(x[7:]) for x in text.splitlines() if x.startswith("RESULT ")]
            results += found[-1:]
            report.append(f"--- {kind} rank {rank}: exit {p.returncode}\n{text[-1500:]}{errors[-3000:]}")
    if late or len(results) != cfg["nranks"] or any(p.returncode for p, _, _ in procs):
        why = f"not done after {timeout_s:g} s" if late else "a rank failed"
        raise RuntimeError(f"{kind} all_reduce: {why}\n" + "\n".join(report))
    return sorted(results, key=lambda r: r["rank"])


def summarize(rounds: list[list[dict]], nbytes: int, nranks: int) -> dict:
    times = [max(r["ms_per_iter"] for r in ranks) for ranks in rounds]  # slowest rank, each round
    t_s = statistics.median(times) / 1e3
    algbw = nbytes / t_s / 1e9
    return {
        "time_ms": t_s * 1e3,
        "algbw_GBps": algbw,
        "busbw_GBps": algbw * 2 * (nranks - 1) / nranks,
        "round_times_ms": times,
        "per_rank": rounds,
        "correct": all(r["correct"] for x in rounds for r in x),
        "nccl": rounds[0][0]["nccl"],
        "nccl_path": rounds[0][0]["nccl_path"],
    }


def skip_reason(nranks: int, env: dict) -> tuple[str | None, dict]:
    from cordee.interconnect import cuda

    reason = cuda.unavailable_reason()
    if reason:
        return f"no usable CUDA GPU ({reason})", {}
    gpus = cuda.CudaDriver().device_count()
    if gpus < nranks:
        return f"needs {nranks} GPUs, the driver reports {gpus}", {}
    r = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE], capture_output=True, text=True, timeout=300, env=env
    )
    if r.returncode != 0:
        return f"torch is not usable: {(r.stderr.strip().splitlines() or ['?'])[-1]}", {}
    probe = json.loads(r.stdout.strip().splitlines()[-1])
    return (None if probe["ok"] else "torch has no CUDA or no NCCL backend"), probe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--nranks", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="ctypes/torch pairs, alternating; median")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for each phase's ranks")
    ap.add_argument("--worker", choices=("ctypes", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        cfg = json.loads(args.config)
        result = (worker_ctypes if args.worker == "ctypes" else worker_torch)(cfg)
        os.write(1, ("RESULT " + json.dumps(result) + "\n").encode())
        return 0
    if expected_value(args.nranks, args.warmup + args.iters) > 1e38:
        sys.exit("bench_nccl_allreduce: too many calls for the doubling check in float32; lower --iters")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [PLATFORM_DIR, os.environ.get("PYTHONPATH")])),
    }
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    reason, probe = skip_reason(args.nranks, env)
    if reason:
        print(f"SKIP bench_nccl_allreduce: {reason}")
        return 0
    if probe["nccl_path"] and "CORDEE_NCCL_LIBRARY" not in os.environ:
        env["CORDEE_NCCL_LIBRARY"] = probe["nccl_path"]  # the very libnccl torch uses
    from cordee.interconnect.nccl import Nccl, find_libnccl

    nccl = Nccl(find_libnccl(env))  # hosts the bootstrap root of the ctypes ranks
    nbytes = args.size_mib << 20
    base = {
        "nranks": args.nranks,
        "count": nbytes // 4,
        "warmup": args.warmup,
        "iters": args.iters,
        "timeout_s": args.timeout,
    }
    runs = {"ctypes": [], "torch": []}
    try:
        for _ in range(args.rounds):
            runs["ctypes"].append(
                run_phase("ctypes", {**base, "uid": nccl.unique_id().hex()}, env, args.timeout)
            )
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            runs["torch"].append(run_phase("torch", {**base, "port": port}, env, args.timeout))
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    sides = {k: summarize(v, nbytes, args.nranks) for k, v in runs.items()}
    ratio = sides["ctypes"]["busbw_GBps"] / sides["torch"]["busbw_GBps"]
    results = {
        "collective": "all_reduce",
        "op": "sum",
        "dtype": "float32",
        "in_place": True,
        "size_bytes": nbytes,
        "nranks": args.nranks,
        "warmup": args.warmup,
        "iters": args.iters,
        "rounds": args.rounds,
        "gpu": probe["gpu_name"],
        "target_ratio": TARGET_RATIO,
        "ratio_ctypes_to_torch": ratio,
        "within_target": ratio >= TARGET_RATIO,
        "same_libnccl": sides["ctypes"]["nccl_path"] == sides["torch"]["nccl_path"],
        "env": {
            k: v for k, v in sorted(env.items()) if k.startswith(("NCCL_", "CUDA_VISIBLE", "CORDEE_NCCL"))
        },
        **sides,
    }
    rows = [
        (
            k,
            f"{s['time_ms']:.3f} ms",
            f"{s['algbw_GBps']:.1f}",
            f"{s['busbw_GBps']:.1f}",
            "ok" if s["correct"] else "WRONG",
            s["nccl"],
        )
        for k, s in sides.items()
    ]
    print_table(
        f"all_reduce {args.size_mib} MiB float32, {args.nranks} GPUs ({probe['gpu_name']})",
        rows,
        ("path", "time", "algbw GB/s", "busbw GB/s", "result", "nccl"),
    )
    verdict = "ok" if results["within_target"] else f"BELOW TARGET {TARGET_RATIO}"
    print(f"ratio ctypes/torch busbw: {ratio:.3f} ({verdict}); same libnccl: {results['same_libnccl']}")
    out = write_result(
        "nccl_allreduce",
        results,
        {"torch": probe["torch"], "cuda": probe["cuda"], "nccl": ".".join(map(str, probe["nccl"] or []))},
    )
    print(f"wrote {out}")
    return 0 if sides["ctypes"]["correct"] and sides["torch"]["correct"] else 1


if __name__ == "__main__":
    from common import print_table, write_result

    sys.exit(main())
