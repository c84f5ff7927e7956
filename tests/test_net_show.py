"""`cordee net show`: the real libnccl (nvidia-nccl-cu12 wheel), the real Debian libfabric, real
gcc-built net plugins loaded through NCCL's resolution rules, and the verdict logic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from test_netplugin import build_fake, gcc

from cordee.interconnect import netreport

SOURCES = Path(__file__).parent / "netplugins"
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("NCCL_", "CORDEE_", "SLURM_"))}
BASE_ENV["NCCL_CONF_FILE"] = os.devnull  # a developer's ~/.nccl.conf must not steer the test


def net_show(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cordee", "net", "show", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def plugins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("net-show-plugins")
    build_fake(root / "good" / "libnccl-net-fake.so", 10)
    gcc(root / "bad" / "libnccl-net-crash.so", "-DABI=8", str(SOURCES / "crash_plugin.c"))
    return root


def test_this_machine_json(tmp_path):
    r = net_show(BASE_ENV, "--json")
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cordee.net/1"
    assert r.returncode == 0, r.stderr  # no plugin and no CXI here are facts ("info"), not warnings
    wheel = metadata.version("nvidia-nccl-cu12")
    assert doc["nccl"]["how"] == "wheel" and wheel.startswith(doc["nccl"]["version"])
    fi_info = subprocess.run(["fi_info", "--version"], capture_output=True, text=True, timeout=30)
    assert f"libfabric: {doc['libfabric']['version']}" in fi_info.stdout
    providers = {e["provider"] for e in doc["libfabric"]["endpoints"]}
    assert {"tcp", "tcp;ofi_rxm", "shm"} <= providers
    assert doc["plugin"]["path"] is None and doc["plugin"]["candidates"] == ["libnccl-net.so"]
    assert doc["cxi"] == [] and doc["status"] in ("ok", "info")
    assert [v["item"] for v in doc["verdicts"]][:4] == ["nccl", "plugin", "libfabric", "cxi"]


def test_provider_filter():
    doc = json.loads(net_show(BASE_ENV, "--json", "--provider", "shm").stdout)
    assert {e["provider"] for e in doc["libfabric"]["endpoints"]} == {"shm"}


def test_plugin_is_probed_with_nccl_rules(plugins):
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(plugins / "good"), NCCL_NET_PLUGIN="fake")
    r = net_show(env, "--json")
    doc = json.loads(r.stdout)
    p = doc["plugin"]
    assert p["path"] == str(plugins / "good" / "libnccl-net-fake.so") and p["abi_version"] == 10
    assert p["name"] == "fake-v10" and len(p["devices"]) == 3
    plugin_verdicts = [v for v in doc["verdicts"] if v["item"] == "plugin"]
    assert plugin_verdicts[0]["level"] == "ok"
    # the fake's device 0 has host-only pointers: GPUDirect is off on some NIC, a warning
    host_only = any(d["ptr_support"] == ["host"] for d in p["devices"])
    assert host_only == any(v["level"] == "warn" for v in plugin_verdicts)
    assert r.returncode == (1 if host_only else 0)
    text = net_show(env)
    assert "ncclNetPlugin_v10" in text.stdout and "nic 0:" in text.stdout


def test_crashing_plugin_is_a_failure_and_cordee_carries_on(plugins):
    env = dict(BASE_ENV, NCCL_NET_PLUGIN=str(plugins / "bad" / "libnccl-net-crash.so"), CRASH_PHASE="init")
    r = net_show(env, "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)  # the report is still complete
    assert "SIGSEGV" in doc["plugin"]["error"] and doc["nccl"]["version"]
    assert any(v["level"] == "fail" and "SIGSEGV" in v["message"] for v in doc["verdicts"])


@pytest.mark.parametrize(
    "var, value, words",
    [
        ("NCCL_NET_PLUGIN", "/does/not/exist/libnccl-net.so", "/does/not/exist"),
        ("CORDEE_NCCL_LIBRARY", "/missing/libnccl.so.2", "/missing/libnccl.so.2"),
        ("CORDEE_LIBFABRIC_LIBRARY", "/missing/libfabric.so.1", "/missing/libfabric.so.1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(var, value, words):
    r = net_show(dict(BASE_ENV, **{var: value}), "--json")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_timeout_must_be_a_positive_number(value):
    r = net_show(BASE_ENV, f"--timeout={value}")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--timeout" in lines[0] and "Traceback" not in r.stderr


def test_no_torch_import():
    code = (
        "import sys; from cordee.cli import main\n"
        "try: main(['net', 'show', '--json'])\n"
        "except SystemExit: pass\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=BASE_ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --- verdicts on reports from hardware this machine does not have ------------------------------


def _doc(**over) -> dict:
    nic = {"name": "cxi0", "ptr_support": ["host", "cuda", "dmabuf"]}
    cxi = {
        "name": "cxi0",
        "dev_node": "/dev/cxi0",
        "link_state": "up",
        "link_speed": "BS_200G",
        "netdev": "hsn0",
    }
    doc = {
        "nccl": {"found": True, "path": "/x/libnccl.so.2", "how": "linker", "version": "2.28.9"},
        "plugin": {
            "path": "/x/libnccl-net-ofi.so",
            "name": "Libfabric",
            "abi_version": 10,
            "devices": [nic] * 4,
        },
        "libfabric": {
            "found": True,
            "path": "/x/libfabric.so.1",
            "version": "2.1.0",
            "endpoints": [{"provider": "cxi"}],
        },
        "cxi": [dict(cxi, name=f"cxi{i}") for i in range(4)],
        "interfaces": [],
    }
    doc.update(over)
    return doc


def _levels(doc: dict, item: str) -> list[str]:
    return [v["level"] for v in netreport.verdicts(doc) if v["item"] == item]


def test_healthy_alps_node_is_all_ok():
    assert netreport.worst(v["level"] for v in netreport.verdicts(_doc())) == "ok"


def test_container_libfabric_without_cxi_fails():
    doc = _doc(libfabric=dict(_doc()["libfabric"], endpoints=[{"provider": "tcp;ofi_rxm"}]))
    assert "fail" in _levels(doc, "libfabric")


def test_plugin_seeing_fewer_nics_than_cxi_devices_warns():
    doc = _doc()
    doc["plugin"]["devices"] = doc["plugin"]["devices"][:3]
    assert _levels(doc, "plugin") == ["ok", "warn"]


def test_gpudirect_off_warns_and_missing_plugin_on_slingshot_warns():
    doc = _doc()
    doc["plugin"]["devices"] = [{"name": "cxi0", "ptr_support": ["host"]}] * 4
    assert _levels(doc, "plugin") == ["ok", "warn"]
    doc = _doc(plugin={"path": None, "candidates": ["libnccl-net.so"], "error": "no plugin found"})
    assert _levels(doc, "plugin") == ["warn"]


def test_link_down_and_invisible_device_fail():
    doc = _doc()
    doc["cxi"][1]["link_state"] = "down"
    doc["cxi"][2]["dev_node"] = None
    assert _levels(doc, "cxi") == ["ok", "fail", "fail", "ok"]


# --- the child mechanism of the library queries (child.run_module) -----------------------------

CHILDREN = {
    "answers": "from cordee.interconnect.child_protocol import emit; emit({'nccl': {'version': '2.0.0'}})",
    "not_an_object": "print('[1, 2]')",
    "bad_bytes": "import os, sys; os.write(2, b'warn \\xff\\xfe\\n'); sys.exit(1)",
    "segfaults": "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
    # a helper in the same process group holds the pipes; both must go at the timeout
    "hangs": "import os, time; os.fork() or None; time.sleep(600)",
}


@pytest.fixture(scope="module")
def child_modules(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("children")
    for name, code in CHILDREN.items():
        (root / f"{name}.py").write_text(code + "\n")
    return dict(BASE_ENV, PYTHONPATH=str(root))


@pytest.mark.parametrize(
    "module, doc, error",
    [
        ("answers", {"nccl": {"version": "2.0.0"}}, None),
        ("not_an_object", None, "q failed (exit 0): no output"),
        ("bad_bytes", None, "q failed (exit 1): warn \ufffd\ufffd"),
        ("segfaults", None, "q crashed (SIGSEGV)"),
        ("hangs", None, "q did not finish within 1 s (killed)"),
    ],
)
def test_run_module_turns_every_ending_into_a_doc_or_one_line(child_modules, module, doc, error):
    from cordee.interconnect import child_protocol as child

    start = time.monotonic()
    res = child.run_module(module, [], environ=child_modules, timeout=1.0, what="q")
    assert time.monotonic() - start < 1.0 + child.DRAIN_S  # the helper did not outlive it
    assert (res.doc, res.error) == (doc, error)
