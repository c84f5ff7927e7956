"""Preflight node checks without torch: the fabric profile (the real profiles and check of `cordee
env check`), NCCL / net plugin / NICs / libfabric through the real probes of `cordee net show`
(libnccl from the nvidia-nccl-cu12 wheel, Debian's libfabric, gcc-built net plugins, one of which
hangs), and the judging of NVML readings (plain values, one fault at a time; the real NVML is read
on the GPU machine by tests/gpu/test_preflight_gpu_health.py). Here NVML itself is really absent:
nvidia-ml-py finds no driver."""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
import types
from pathlib import Path

import pytest
from netplugins.build import SOURCES, build_fake, gcc

from cordee.errors import InputError
from cordee.preflight import gpu_health
from cordee.preflight.env_checks import CheckTimeout, bounded_call, network_checks, profile_check
from cordee.preflight.gpu_health import gpu_checks, judge
from cordee.preflight.systems import load_system

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("NCCL_", "CORDEE_", "SLURM_", "FI_"))}
BASE_ENV["NCCL_CONF_FILE"] = os.devnull  # a developer's ~/.nccl.conf must not steer the test


def by_check(results) -> dict:
    out = {r.check: r for r in results}
    assert len(out) == len(results), [r.check for r in results]  # one result per check per node
    return out


def system(name="h200-sxm", **changes):
    return dataclasses.replace(load_system(name, gpus=changes.pop("gpus", 4)), **changes)


# --- bounded calls ---------------------------------------------------------------------------


def test_bounded_call_returns_raises_and_times_out():
    assert bounded_call(lambda: 7, 1.0, "x") == 7
    with pytest.raises(ZeroDivisionError):
        bounded_call(lambda: 1 / 0, 1.0, "x")
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(CheckTimeout, match="stuck did not finish within 0.3 s"):
        bounded_call(release.wait, 0.3, "stuck")
    assert time.monotonic() - started < 2
    release.set()


# --- fabric profile --------------------------------------------------------------------------


def test_profile_clean_missing_and_dangerous():
    from cordee import profiles

    single = profiles.load("single-node")
    ok = profile_check(dict(BASE_ENV, **single.as_env()), "n1", profile_name="single-node", nnodes=1)[0]
    assert (ok.check, ok.status, ok.value, ok.node) == ("env.profile", "ok", 0.0, "n1")

    slingshot = profiles.load("slingshot-cscs")
    full = dict(BASE_ENV, **slingshot.as_env())
    assert profile_check(full, "n1", profile_name="slingshot-cscs", nnodes=4)[0].status == "ok"
    missing = profile_check(
        {k: v for k, v in full.items() if k != "FI_CXI_DEFAULT_CQ_SIZE"},
        "n1",
        profile_name="slingshot-cscs",
        nnodes=4,
    )[0]
    assert (missing.status, missing.value) == ("warn", 1.0)
    assert missing.detail == "fabric profile slingshot-cscs (given): 1 missing (FI_CXI_DEFAULT_CQ_SIZE)"
    assert missing.data["problems"] == [
        {
            "name": "FI_CXI_DEFAULT_CQ_SIZE",
            "status": "missing",
            "expected": full["FI_CXI_DEFAULT_CQ_SIZE"],
            "actual": None,
        }
    ]

    bad = profile_check(
        dict(full, MPICH_GPU_SUPPORT_ENABLED="1"), "n1", profile_name="slingshot-cscs", nnodes=4
    )[0]
    assert bad.status == "fail" and bad.value == 1.0
    assert "1 dangerous (MPICH_GPU_SUPPORT_ENABLED)" in bad.detail
    # the traps hold whatever the profile lists: LL128 left on over Slingshot
    unset = profile_check(
        {k: v for k, v in full.items() if k != "NCCL_PROTO"}, "n1", profile_name="slingshot-cscs"
    )
    assert unset[0].status == "fail" and "1 dangerous (NCCL_PROTO)" in unset[0].detail


def test_profile_suggested_for_one_node_and_unknown_name():
    r = profile_check(BASE_ENV, "n1", nnodes=1)[0]
    assert "fabric profile single-node (suggested)" in r.detail
    with pytest.raises(InputError, match="unknown profile 'nope'"):
        profile_check(BASE_ENV, "n1", profile_name="nope")


# --- network ---------------------------------------------------------------------------------


def test_cpu_system_skips_the_network_without_probing():
    started = time.monotonic()
    results = network_checks(load_system("cpu-ci"), BASE_ENV, "n1")
    assert [(r.check, r.status) for r in results] == [("env.nccl", "skip")]
    assert time.monotonic() - started < 0.5  # nothing was loaded


def test_this_machine_against_a_slingshot_system():
    results = by_check(network_checks(system("alps-gh200"), BASE_ENV, "n1", timeout_s=30))
    assert results["env.nccl"].status == "ok" and "NCCL 2." in results["env.nccl"].detail
    assert results["env.net_plugin"].status == "fail"
    assert "no net plugin found (tried libnccl-net.so)" in results["env.net_plugin"].detail
    assert results["net.nic_count"].status == "skip"  # no plugin: nobody to count the NICs
    assert results["env.libfabric"].status == "fail"
    assert "no cxi provider" in results["env.libfabric"].detail and "tcp" in results["env.libfabric"].detail


def test_libfabric_provider_present():
    results = by_check(network_checks(system(libfabric_provider="tcp"), BASE_ENV, "n1", timeout_s=30))
    assert (
        results["env.libfabric"].status == "ok" and "provider tcp present" in results["env.libfabric"].detail
    )


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight-plugins")
    build_fake(root / "good" / "libnccl-net-fake.so", 10)  # 3 NICs; dev1 host memory only
    gcc(root / "hang" / "libnccl-net-hang.so", "-DABI=8", str(SOURCES / "hang_plugin.c"))
    return root


def test_real_plugin_nics_speed_and_gpudirect(plugins):
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(plugins / "good"), NCCL_NET_PLUGIN="fake")
    four = by_check(network_checks(system(nics_per_node=4, net_plugin=True), env, "n1", timeout_s=30))
    assert (
        four["env.net_plugin"].status == "ok"
        and "'fake-v10' via ncclNetPlugin_v10" in four["env.net_plugin"].detail
    )
    count = four["net.nic_count"]
    assert (count.status, count.value, count.threshold) == ("fail", 3.0, 4.0)
    assert "fake-v10-dev0, fake-v10-dev1, fake-v10-dev2" in count.detail
    assert four["net.nic_speed"].value == 25.0  # the slowest of 200.01, 400, 25 Gb/s
    gd = four["net.gpudirect"]
    assert gd.status == "warn" and "1 of 3 NICs (fake-v10-dev1)" in gd.detail
    three = by_check(network_checks(system(nics_per_node=3, net_plugin=True), env, "n1", timeout_s=30))
    assert three["net.nic_count"].status == "ok"


def test_hanging_plugin_is_bounded(plugins, tmp_path):
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(plugins / "hang"), NCCL_NET_PLUGIN="hang")
    env["HANG_PIDFILE"] = str(tmp_path / "pid")
    started = time.monotonic()
    results = by_check(network_checks(system(net_plugin=True), env, "n1", timeout_s=2.0))
    assert time.monotonic() - started < 2.0 + 5.0
    plugin = results["env.net_plugin"]
    assert plugin.status == "fail" and "init did not return within 2.0 s (hanging in init" in plugin.detail
    helper = Path(f"/proc/{int((tmp_path / 'pid').read_text())}/stat")
    deadline = time.monotonic() + 5  # the probe's whole process group was killed, the plugin's helper too
    while helper.exists() and helper.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the helper forked by the hanging plugin survived"
        time.sleep(0.05)


# --- NVML: the real library without a driver -------------------------------------------------


def test_no_nvml_skips_or_fails_by_the_system():
    import importlib.util

    cpu = gpu_checks(load_system("cpu-ci"), BASE_ENV, "n1")
    assert [(r.check, r.status) for r in cpu] == [("gpu.count", "skip")]
    assert cpu[0].detail.startswith("NVML not available")
    gpu = gpu_checks(system(), BASE_ENV, "n1")
    assert [(r.check, r.status) for r in gpu] == [("gpu.count", "fail")]
    assert gpu[0].detail.startswith("expected 4 GPUs, NVML not available")
    if importlib.util.find_spec("pynvml"):  # nvidia-ml-py installed: it finds no driver here
        assert "no NVIDIA driver" in gpu[0].detail


def test_nvml_that_hangs_is_an_error_in_time(monkeypatch):
    release = threading.Event()
    stub = types.SimpleNamespace(NVMLError=RuntimeError, nvmlInit=release.wait)  # a GPU stuck in init
    monkeypatch.setitem(__import__("sys").modules, "pynvml", stub)
    started = time.monotonic()
    results = gpu_checks(system(), BASE_ENV, "n1", timeout_s=0.5)
    release.set()
    assert time.monotonic() - started < 2
    assert [(r.check, r.status) for r in results] == [("gpu.nvml", "error")]
    assert "NVML did not finish within 0.5 s" in results[0].detail


# --- NVML readings judged --------------------------------------------------------------------

HEALTHY_GPU = {
    "name": "NVIDIA H200", "pci_bus_id": "00000000:19:00.0",
    "ecc_volatile": 0, "ecc_aggregate": 0, "retired_pending": False, "remap_pending": False,
    "remap_failure": False, "throttle": 0x1 | 0x4, "temp_c": 31, "mem_used": 600 << 20,
    "mem_total": 141 << 30, "procs": [], "pcie_gen": 1, "pcie_gen_max": 5, "pcie_gen_gpu_max": 5,
    "pcie_width": 16, "pcie_width_max": 16, "util": 0, "nvlink_up": 18, "errors": {},
}  # fmt: skip


def readings(n=4, cvd=None, **per_gpu):
    """n healthy GPUs; per_gpu: gpu index -> dict of fields to change."""
    gpus = []
    for i in range(n):
        g = copy.deepcopy(HEALTHY_GPU) | {"index": i, "uuid": f"GPU-{i:08x}-aaaa"}
        g.update(per_gpu.get(f"g{i}", {}))
        gpus.append(g)
    return {"driver": "580.159", "count": n, "cuda_visible_devices": cvd, "gpus": gpus}


def judged(r, sys=None, own=()) -> dict:
    return by_check(judge(r, sys or system(nvlink_links=18), "n1", own_pids=own))


def test_healthy_node_is_all_ok():
    results = judged(readings())
    assert {c: r.status for c, r in results.items()} == dict.fromkeys(results, "ok")
    assert len(results) == 11
    assert results["gpu.pcie_gen"].value == 1.0  # gen 1 at idle is power saving, not a fault
    assert results["gpu.throttle"].detail.startswith("4 GPUs: no clock slowdown")
    assert results["gpu.count"].value == 4 and results["gpu.count"].threshold == 4


@pytest.mark.parametrize(
    "change, check, status, words",
    [
        ({"g1": {"ecc_volatile": 2}}, "gpu.ecc", "fail", "GPU 1: 2 uncorrected"),
        ({"g2": {"ecc_aggregate": 5}}, "gpu.ecc", "ok", "GPU 2: 5 uncorrected in its lifetime"),
        ({"g0": {"retired_pending": True}}, "gpu.retired_pages", "fail", "GPU 0: 1 with pages pending"),
        ({"g3": {"remap_pending": True}}, "gpu.row_remap", "fail", "GPU 3: 1 with rows pending"),
        ({"g3": {"remap_failure": True}}, "gpu.row_remap", "fail", "GPU 3: row remapping failed"),
        ({"g1": {"throttle": 0x1 | 0x40}}, "gpu.throttle", "fail", "GPU 1: HW thermal slowdown"),
        ({"g1": {"throttle": 0x1 | 0x8 | 0x80}}, "gpu.throttle", "fail", "HW slowdown, HW power brake"),
        ({"g1": {"throttle": 0x1 | 0x20}}, "gpu.throttle", "warn", "GPU 1: SW thermal slowdown"),
        ({"g1": {"throttle": 0x1 | 0x800}}, "gpu.throttle", "warn", "GPU 1: unknown reason 0x800"),
        ({"g1": {"throttle": 0x1 | 0x2 | 0x10 | 0x100}}, "gpu.throttle", "ok", "no clock slowdown"),
        ({"g0": {"pcie_width": 8}}, "gpu.pcie_width", "fail", "GPU 0: PCIe width 0.50 of its maximum"),
        ({"g0": {"throttle": 0, "util": 90, "pcie_gen": 3}}, "gpu.pcie_gen", "warn", "gen 3 of 5 while busy"),
        ({"g0": {"pcie_gen_max": 4}}, "gpu.pcie_gen", "warn", "GPU 0: PCIe generation of the slot 0.80"),
        ({"g2": {"nvlink_up": 16}}, "gpu.nvlink", "fail", "GPU 2: 2 NVLinks down"),
        ({"g1": {"procs": [{"pid": 4242, "used": 3 << 30}]}}, "gpu.processes", "fail",
         "pid 4242 on GPU 1, 3.0 GiB"),
        ({"g1": {"errors": {"ecc": {"status": "error", "message": "nvmlDeviceGetTotalEccErrors: Unknown"}}}},
         "gpu.ecc", "error", "GPU 1: nvmlDeviceGetTotalEccErrors: Unknown"),
        ({"g1": {"temp_c": None, "errors": {"temperature": {"status": "fail", "message": "GPU is lost"}}}},
         "gpu.temperature", "fail", "GPU 1: GPU is lost"),
    ],
)  # fmt: skip
def test_one_fault_at_a_time(change, check, status, words):
    results = judged(readings(**change))
    assert results[check].status == status and words in results[check].detail, results[check]
    others = {c: r.status for c, r in results.items() if c != check}
    assert others == dict.fromkeys(others, "ok")


def test_not_supported_is_a_skip():
    r = readings(
        **{f"g{i}": {"retired_pending": None, "nvlink_up": None, "throttle": None} for i in range(4)}
    )
    results = judged(r)
    for check in ("gpu.retired_pages", "gpu.nvlink", "gpu.throttle"):
        assert results[check].status == "skip", results[check]
    assert "not supported on NVIDIA H200" in results["gpu.nvlink"].detail


def test_own_processes_and_their_memory_are_not_foreign():
    mine = {"procs": [{"pid": 100, "used": 40 << 30}], "mem_used": (40 << 30) + (600 << 20)}
    results = judged(readings(g0=mine), own={100})
    assert results["gpu.processes"].status == "ok" and results["gpu.processes"].value == 0
    assert results["gpu.memory_idle"].value < 0.01  # 40 GiB of ours do not count as used at idle
    results = judged(readings(g0=mine))
    assert (
        results["gpu.processes"].status == "fail"
        and "pid 100 on GPU 0, 40.0 GiB" in results["gpu.processes"].detail
    )
    assert results["gpu.memory_idle"].value > 0.25


@pytest.mark.parametrize(
    "n, cvd, status, words",
    [
        (3, None, "fail", "3 GPUs (NVIDIA H200), system h200-sxm has 4 per node"),
        (5, None, "warn", "5 GPUs"),
        (4, "0,1", "ok", "CUDA_VISIBLE_DEVICES restricts this process to 2"),
        (4, "GPU-00000002", "ok", "restricts this process to 1"),
        (4, "0,7,1", "fail", "CUDA_VISIBLE_DEVICES='0,7,1' names '7', not one of the 4 GPUs NVML sees"),
        (4, "-1", "fail", "names '-1'"),
        (4, "", "fail", "names ''"),
    ],
)
def test_gpu_count_and_cuda_visible_devices(n, cvd, status, words):
    result = judged(readings(n, cvd))["gpu.count"]
    assert result.status == status and words in result.detail, result


def test_lost_gpu_and_no_gpus():
    r = readings()
    r["gpus"][2] = {"index": 2, "lost": "no NVML handle: GPU is lost"}
    results = judge(r, system(nvlink_links=18), "n1")
    assert results[0].status == "fail" and "GPU 2: no NVML handle: GPU is lost" in results[0].detail
    assert len(results) == 11 and all(res.status == "ok" for res in results[1:])  # the other 3 GPUs
    none = judge({"driver": "x", "count": 0, "cuda_visible_devices": None, "gpus": []}, system(), "n1")
    assert [(res.check, res.status) for res in none] == [("gpu.count", "fail")]


def test_profile_thresholds_judge_temperature_and_memory():
    profile = system(nvlink_links=18)
    temp, mem = profile.threshold("gpu_temp_idle_c"), profile.threshold("gpu_mem_used_idle_frac")
    assert temp is not None and mem is not None  # the h200-sxm profile sets both
    hot = judged(readings(g3={"temp_c": temp.fail + 1}), profile)["gpu.temperature"]
    assert hot.status == "fail" and hot.value == temp.fail + 1 and hot.threshold == temp.fail
    full = judged(readings(g0={"mem_used": int(0.9 * (141 << 30))}), profile)["gpu.memory_idle"]
    assert full.status == "fail" and "GPU 0: 90.0% of memory used at idle" in full.detail
    assert gpu_health.DEFAULT_LIMITS.keys() >= {"ecc_uncorrected", "pcie_width_ratio"}
