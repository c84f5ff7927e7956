"""`cordee net show`: the real libnccl (nvidia-nccl-cu12 wheel), the real Debian libfabric, real
gcc-built net plugins loaded through NCCL's resolution rules, and the verdict logic. Each
misleading report this command once gave (a plugin that exists but does not load shown as "not
found", a failing init without the plugin's reasons, FI_PROVIDER naming nothing shown as ok) has
a test here with the real component."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from netplugins.build import SOURCES, build_fake, build_with_dependency, fake_libnccl, foreign_arch_copy, gcc

from cordee.interconnect import netverdicts
from cordee.interconnect.netreport import PLUGIN_LOG_LINES

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
    build_fake(root / "v12" / "libnccl-net-fake.so", 12)
    fake_libnccl(root / "nccl-v11" / "libnccl.so.2", newest=11)
    gcc(root / "bad" / "libnccl-net-crash.so", "-DABI=8", str(SOURCES / "crash_plugin.c"))
    build_with_dependency(root / "dep", root / "dep-lib")
    foreign_arch_copy(root / "good" / "libnccl-net-fake.so", root / "foreign" / "libnccl-net-foreign.so")
    return root


def plugin_verdicts(doc: dict) -> list[dict]:
    return [v for v in doc["verdicts"] if v["item"] == "plugin"]


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
    # the fake's device 1 has host-only pointers: GPUDirect is off on that NIC alone, a warning
    assert [d["ptr_support"] for d in p["devices"]][1] == ["host"]
    assert [(v["level"], v["message"]) for v in plugin_verdicts(doc)] == [
        ("ok", "'fake-v10' via ncclNetPlugin_v10, 3 NICs"),
        ("warn", "GPUDirect RDMA off on 1 of 3 NICs (fake-v10-dev1): no CUDA/dma-buf pointer support"),
    ]
    assert r.returncode == 1
    text = net_show(env)
    assert "ncclNetPlugin_v10" in text.stdout and "nic 0:" in text.stdout


def test_crashing_plugin_is_a_failure_and_cordee_carries_on(plugins):
    env = dict(BASE_ENV, NCCL_NET_PLUGIN=str(plugins / "bad" / "libnccl-net-crash.so"), CRASH_PHASE="init")
    r = net_show(env, "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)  # the report is still complete
    assert "SIGSEGV" in doc["plugin"]["error"] and doc["nccl"]["version"]
    assert any(v["level"] == "fail" and "SIGSEGV" in v["message"] for v in doc["verdicts"])


@pytest.mark.parametrize("by", ["name", "path"])
def test_plugin_whose_dependency_is_missing_fails_naming_it(plugins, by):
    """aws-ofi-nccl without libfabric on the library path: NCCL would quietly use TCP sockets."""
    plugin = plugins / "dep" / "libnccl-net-dep.so"
    env = dict(
        BASE_ENV, LD_LIBRARY_PATH=str(plugin.parent), NCCL_NET_PLUGIN="dep" if by == "name" else str(plugin)
    )
    r = net_show(env, "--json")
    assert r.returncode == 2, r.stdout
    doc = json.loads(r.stdout)
    assert doc["plugin"]["not_found"] is False and doc["plugin"]["path"] is None
    missing = "libcordeetestdep.so: cannot open shared object file: No such file or directory"
    assert missing in doc["plugin"]["error"]  # the loader's message is kept in the JSON
    [verdict] = plugin_verdicts(doc)
    assert verdict["level"] == "fail" and verdict["message"].startswith(f"could not load {plugin}: it needs ")
    assert "libcordeetestdep.so" in verdict["message"]
    text = net_show(env)
    assert text.returncode == 2 and "no NCCL net plugin found" not in text.stdout
    assert f"[FAIL] plugin    could not load {plugin}: it needs libcordeetestdep.so" in text.stdout
    env["LD_LIBRARY_PATH"] += os.pathsep + str(plugins / "dep-lib")  # the same plugin, dependency found
    assert plugin_verdicts(json.loads(net_show(env, "--json").stdout))[0]["level"] == "ok"


def test_plugin_for_another_machine_fails_with_the_loaders_message(plugins):
    plugin = plugins / "foreign" / "libnccl-net-foreign.so"
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(plugin.parent), NCCL_NET_PLUGIN="foreign")
    r = net_show(env, "--json")
    assert r.returncode == 2, r.stdout
    [verdict] = plugin_verdicts(json.loads(r.stdout))
    assert verdict["level"] == "fail" and verdict["message"].startswith(
        f"could not load {plugin}: it is built for "
    )
    assert "the loader says: libnccl-net-foreign.so: cannot open shared object file" in verdict["message"]


def test_plugin_newer_than_the_jobs_nccl_fails(plugins):
    """A v12-only plugin beside an NCCL that looks for v11..v6 (as 2.28 does): NCCL never loads it."""
    nccl = plugins / "nccl-v11" / "libnccl.so.2"
    env = dict(
        BASE_ENV, LD_LIBRARY_PATH=str(plugins / "v12"), NCCL_NET_PLUGIN="fake", CORDEE_NCCL_LIBRARY=str(nccl)
    )
    doc = json.loads(net_show(env, "--json").stdout)
    assert doc["plugin"]["nccl_versions"] == [11, 10, 9, 8, 7, 6]
    [verdict] = plugin_verdicts(doc)
    assert verdict["level"] == "fail" and verdict["message"].endswith(
        f"the plugin exports v12, the NCCL in {nccl} looks for v11..v6: NCCL would not load it and would "
        "use its internal transports"
    )
    # with the wheel's NCCL (which looks for v12 or not, as its .rodata says) the verdict follows suit
    doc = json.loads(net_show(dict(env, CORDEE_NCCL_LIBRARY=""), "--json").stdout)
    wheel_loads = 12 in doc["plugin"]["nccl_versions"]
    assert (plugin_verdicts(doc)[0]["level"] == "ok") == wheel_loads


def test_failing_init_shows_the_plugins_own_warnings(plugins):
    env = dict(BASE_ENV, LD_LIBRARY_PATH=str(plugins / "good"), NCCL_NET_PLUGIN="fake", FAKE_NET_INIT_RC="2")
    doc = json.loads(net_show(env, "--json").stdout)
    messages = [m["message"] for m in doc["plugin"]["log"]]
    assert "looking for a usable NIC" in messages  # INFO: in the JSON, not under the verdict
    r = net_show(env)
    assert r.returncode == 2
    lines = r.stdout.splitlines()
    at = lines.index(
        f"[FAIL] plugin    {plugins / 'good' / 'libnccl-net-fake.so'}: init returned 2 (ncclSystemError)"
    )
    excerpt = []
    for line in lines[at + 1 :]:
        if not line.startswith(" " * 17):
            break
        excerpt.append(line.strip())
    warnings = [m for m in doc["plugin"]["log"] if m["level"] == "WARN"]
    assert 0 < len(excerpt) == len(warnings) <= PLUGIN_LOG_LINES
    assert all(line.startswith("WARN fake_plugin.c:") for line in excerpt), excerpt
    assert excerpt[-1].endswith(": no usable NIC: all links down (FAKE_NET_INIT_RC)")
    assert "looking for a usable NIC" not in r.stdout


# --- FI_PROVIDER, against the real Debian libfabric -------------------------------------------


def test_fi_provider_naming_no_provider_fails():
    # ground truth: libfabric's own fi_info finds nothing either (-61, FI_ENODATA)
    fi_info = subprocess.run(
        ["fi_info"],
        env=dict(BASE_ENV, FI_PROVIDER="doesnotexist"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert fi_info.returncode != 0 and "-61" in fi_info.stdout + fi_info.stderr
    r = net_show(dict(BASE_ENV, FI_PROVIDER="doesnotexist"), "--json")
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["libfabric"]["endpoints"] == [] and doc["libfabric"]["fi_provider"] == "doesnotexist"
    [verdict] = [v for v in doc["verdicts"] if v["item"] == "libfabric"]
    assert verdict["level"] == "fail"
    assert verdict["message"].startswith("FI_PROVIDER='doesnotexist': libfabric ")
    assert "has no endpoints (fi_getinfo: -61, FI_ENODATA)" in verdict["message"]
    assert "providers none" not in net_show(dict(BASE_ENV, FI_PROVIDER="doesnotexist")).stdout


@pytest.mark.parametrize(
    "value, levels, rc",
    [("tcp", ["ok"], 0), ("tcp,doesnotexist", ["ok", "warn"], 1), ("^doesnotexist", ["ok"], 0)],
)
def test_fi_provider_names_that_give_nothing_warn(value, levels, rc):
    r = net_show(dict(BASE_ENV, FI_PROVIDER=value), "--json")
    doc = json.loads(r.stdout)
    verdicts = [v for v in doc["verdicts"] if v["item"] == "libfabric"]
    assert [v["level"] for v in verdicts] == levels and r.returncode == rc, verdicts
    if "warn" in levels:
        assert verdicts[1]["message"] == (
            "FI_PROVIDER='tcp,doesnotexist' names doesnotexist, which gives no endpoints here"
        )


def test_provider_filter_matching_nothing_warns():
    r = net_show(BASE_ENV, "--json", "--provider", "doesnotexist")
    [verdict] = [v for v in json.loads(r.stdout)["verdicts"] if v["item"] == "libfabric"]
    assert r.returncode == 1 and verdict["level"] == "warn"
    assert verdict["message"].endswith("no endpoints for --provider doesnotexist")


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
    return [v["level"] for v in netverdicts.verdicts(doc) if v["item"] == item]


def test_healthy_alps_node_is_all_ok():
    assert netverdicts.worst(v["level"] for v in netverdicts.verdicts(_doc())) == "ok"


def test_container_libfabric_without_cxi_fails():
    doc = _doc(libfabric=dict(_doc()["libfabric"], endpoints=[{"provider": "tcp;ofi_rxm"}]))
    assert "fail" in _levels(doc, "libfabric")


def test_plugin_seeing_fewer_nics_than_cxi_devices_warns():
    doc = _doc()
    doc["plugin"]["devices"] = doc["plugin"]["devices"][:3]
    assert _levels(doc, "plugin") == ["ok", "warn"]


def _messages(doc: dict, item: str) -> list[str]:
    return [v["message"] for v in netverdicts.verdicts(doc) if v["item"] == item]


def test_gpudirect_off_says_on_how_many_nics():
    doc = _doc()
    doc["plugin"]["devices"] = [{"name": f"cxi{i}", "ptr_support": ["host"]} for i in range(4)]
    assert _levels(doc, "plugin") == ["ok", "warn"]
    assert _messages(doc, "plugin")[1].startswith("GPUDirect RDMA off on all 4 NICs: ")
    doc["plugin"]["devices"][0] = {"name": "cxi0", "ptr_support": ["host", "dmabuf"]}
    doc["plugin"]["devices"][2] = {"name": "cxi2", "ptr_support": ["cuda"]}
    assert _messages(doc, "plugin")[1].startswith("GPUDirect RDMA off on 2 of 4 NICs (cxi1, cxi3): ")


def test_missing_plugin_on_slingshot_warns_but_an_unloadable_one_fails():
    missing = {"path": None, "candidates": ["libnccl-net.so"], "not_found": True, "error": "no plugin found"}
    assert _levels(_doc(plugin=missing), "plugin") == ["warn"]
    assert _levels(_doc(plugin=missing, cxi=[]), "plugin") == ["info"]
    unloadable = dict(
        missing, not_found=False, error="could not load /x/libnccl-net.so: it needs libfabric.so.1"
    )
    assert _levels(_doc(plugin=unloadable), "plugin") == ["fail"]
    assert _messages(_doc(plugin=unloadable), "plugin") == [unloadable["error"]]


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
