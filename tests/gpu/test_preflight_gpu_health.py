"""Preflight GPU health on a real NVIDIA node (the lent accelerator): the real NVML through
nvidia-ml-py, cross-checked with nvidia-smi, a real foreign process holding GPU memory, and the
judging of the real readings against the system profile. Skipped where there is no GPU."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (runs on the lent GPU node)"),
]
pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (the nvml extra)")

from cordee.preflight.gpu_health import gpu_checks, judge, read_nvml  # noqa: E402
from cordee.preflight.systems import load_system  # noqa: E402


def smi(query: str) -> list[str]:
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return [line.strip() for line in out.splitlines() if line.strip()]


def by_check(results) -> dict:
    return {r.check: r for r in results}


@pytest.fixture(scope="module")
def readings():
    return read_nvml(os.environ)


def test_readings_match_nvidia_smi(readings):
    names = smi("name")
    assert readings["count"] == len(names) == len(readings["gpus"])
    assert [g["name"] for g in readings["gpus"]] == names
    assert [g["uuid"] for g in readings["gpus"]] == smi("uuid")
    assert readings["driver"] == smi("driver_version")[0]
    for g, width_max in zip(readings["gpus"], smi("pcie.link.width.max"), strict=True):
        assert not g.get("lost") and g["errors"] == {}, g
        assert g["mem_total"] > 100 << 30 and 0 < g["temp_c"] < 100
        assert g["ecc_volatile"] is not None and g["throttle"] is not None
        if width_max.isdigit():
            assert g["pcie_width_max"] == int(width_max)


def test_judged_against_the_h200_profile(readings):
    profile = load_system("h200-sxm", gpus=readings["count"])
    results = judge(readings, profile, "gpu-node", own_pids={os.getpid()})
    statuses = {r.check: r.status for r in results}
    print("\n".join(f"{r.status:5} {r.check}: {r.detail}" for r in results))  # the log of the run
    assert statuses["gpu.count"] == "ok"
    assert "error" not in statuses.values(), statuses


def test_foreign_process_is_named_and_ours_is_not():
    hog = textwrap.dedent("""
        import sys, time, torch
        x = torch.empty(4 << 30, dtype=torch.uint8, device="cuda:0")  # 4 GiB held
        torch.cuda.synchronize()
        print("ready", flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", hog], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        profile = dataclasses.replace(load_system("h200-sxm", gpus=torch.cuda.device_count()))
        started = time.monotonic()
        foreign = by_check(gpu_checks(profile, os.environ, "gpu-node", own_pids={os.getpid()}, timeout_s=20))
        elapsed = time.monotonic() - started
        ours = by_check(gpu_checks(profile, os.environ, "gpu-node", own_pids={os.getpid(), child.pid}))
    finally:
        child.kill()
        child.wait(timeout=30)
    print(f"NVML pass: {elapsed:.2f} s\n{foreign['gpu.processes']}\n{foreign['gpu.memory_idle']}")
    procs = foreign["gpu.processes"]
    if procs.status == "skip":
        pytest.skip(f"NVML lists no processes here: {procs.detail}")
    if f"pid {child.pid} on GPU 0" not in procs.detail:
        pytest.skip(
            f"NVML reports pids of another namespace ({procs.detail}): foreign-process check cannot match"
        )
    held = re.search(rf"pid {child.pid} on GPU 0, ([0-9.]+) GiB", procs.detail)
    assert procs.status == "fail" and held and float(held.group(1)) >= 4.0  # 4 GiB + its CUDA context
    assert foreign["gpu.memory_idle"].value > ours["gpu.memory_idle"].value
    assert ours["gpu.processes"].status == "ok"
