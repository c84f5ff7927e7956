"""`cordee preflight` on a real GPU node (the lent accelerator), standalone: it starts one rank per
GPU itself. The standard level must pass against the profile it picks for the GPUs found, with
NVML values read for real, GEMM and device-copy results on every rank, and verified NCCL
collectives; the quick level must not import torch in any process. Skipped where there is no GPU.
The wall times and the engine-vs-torch ratios are in tests/benchmarks/results/preflight_gpu.json
(bench_preflight_gpu.py), not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here (runs on the lent GPU node)"),
]


def preflight(tmp_path, *args, timeout=240):
    out = tmp_path / "results.json"
    cp = subprocess.run(
        [sys.executable, "-m", "cordee", "preflight", *args, "--json", str(out)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert out.exists(), f"exit {cp.returncode}, no JSON\n{cp.stdout}\n{cp.stderr}"
    return cp, json.loads(out.read_text())


def test_standard_level_passes_with_real_readings(tmp_path):
    cp, doc = preflight(tmp_path, "--level", "standard")
    assert cp.returncode in (0, 1), f"{cp.stdout}\n{cp.stderr}"
    by_check = {}
    for r in doc["results"]:
        by_check.setdefault(r["check"], []).append(r)
    gpus = torch.cuda.device_count()
    assert doc["ranks"] == gpus and doc["system"] != "cpu-ci", doc["system"]
    (count,) = by_check["gpu.count"]
    assert count["status"] == "ok" and count["value"] == gpus, count
    assert by_check["gpu.temperature"][0]["value"] > 0  # read from NVML, not a default
    gemm = by_check["compute.gemm"]
    assert len(gemm) == gpus and all(r["status"] == "ok" and r["value"] > 100 for r in gemm), gemm
    copy = by_check["memory.copy"]
    assert len(copy) == gpus and all(r["status"] == "ok" and r["value"] > 500 for r in copy), copy
    assert not [r for r in doc["results"] if r["status"] in ("fail", "error")], cp.stdout


def test_quick_level_imports_no_torch(tmp_path):
    """The quick level runs before every job: a cold `import torch` alone takes ~4 s on this node."""
    cp, doc = preflight(tmp_path, "--level", "quick", timeout=60)
    assert cp.returncode in (0, 1), f"{cp.stdout}\n{cp.stderr}"
    assert {r["check"] for r in doc["results"]} >= {"gpu.count", "gpu.ecc"}
    code = (
        "import sys, runpy; sys.argv = ['cordee', 'preflight', '--level', 'quick', '--quiet'];"
        "import cordee.cli as c\ntry:\n    c.main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout + out.stderr
