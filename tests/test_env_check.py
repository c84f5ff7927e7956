"""`cordee env check`: the pure check (every trap, malformed values, exit codes) and the real CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from launchvars import clean_env as launch_free

from cordee.profiles import load, suggest
from cordee.profiles.check import SCHEMA, STATUSES, check_environment
from cordee.profiles.values import ll128_scopes, parse_nccl_proto

CORDEE = str(Path(sys.executable).with_name("cordee"))
CSCS = load("slingshot-cscs")


def full(profile, **extra):
    """The profile's applied variables plus `extra` (None removes a variable)."""
    env = profile.as_env()
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def item(report, name):
    (found,) = [i for i in report.items if i.name == name]
    return found


def statuses(report):
    return {i.name: i.status for i in report.items if i.status != "ok"}


# --- basics ----------------------------------------------------------------------------------------


def test_full_profile_is_ok_and_exit_0():
    r = check_environment(CSCS, full(CSCS), 4)
    assert r.exit_code == 0 and statuses(r) == {}
    assert [i.name for i in r.items] == [v.name for v in CSCS.variables]
    assert {i.status for i in r.items} == {"ok"} <= set(STATUSES)


def test_missing_and_different_are_warnings():
    r = check_environment(CSCS, full(CSCS, NCCL_NET_GDR_LEVEL=None, FI_CXI_RX_MATCH_MODE="hybrid"), 4)
    assert statuses(r) == {"NCCL_NET_GDR_LEVEL": "missing", "FI_CXI_RX_MATCH_MODE": "different"}
    assert r.exit_code == 1
    missing = item(r, "NCCL_NET_GDR_LEVEL")
    assert missing.expected == "PHB" and missing.actual is None and missing.source
    diff = item(r, "FI_CXI_RX_MATCH_MODE")
    assert diff.expected == "software" and diff.actual == "hybrid" and "software" in diff.message


def test_empty_value_counts_as_different():
    r = check_environment(CSCS, full(CSCS, CUDA_CACHE_DISABLE=""), 4)
    assert (
        statuses(r) == {"CUDA_CACHE_DISABLE": "different"}
        and "empty" in item(r, "CUDA_CACHE_DISABLE").message
    )


def test_integers_compare_by_value():
    assert check_environment(CSCS, full(CSCS, FI_CXI_DEFAULT_CQ_SIZE="0131072"), 4).exit_code == 0


def test_optional_variables_are_reported_not_required():
    r = check_environment(CSCS, full(CSCS, NCCL_NCHANNELS_PER_NET_PEER="16"), 4)
    assert r.exit_code == 0
    assert item(r, "NCCL_NCHANNELS_PER_NET_PEER").status == "ok"
    assert "'4'" in item(r, "NCCL_NCHANNELS_PER_NET_PEER").message
    unset = {v.name for v in r.optional}
    assert "FI_CXI_RDZV_GET_MIN" in unset and "NCCL_NCHANNELS_PER_NET_PEER" not in unset


def test_one_item_per_variable_and_worst_status_wins():
    r = check_environment(CSCS, full(CSCS, FI_CXI_DEFAULT_TX_SIZE="32768"), 4)
    tx = item(r, "FI_CXI_DEFAULT_TX_SIZE")  # both "different" from the profile and trap 2
    assert tx.status == "dangerous" and tx.expected == "16384" and tx.actual == "32768"
    assert "maximum" in tx.message and "profile has '16384'" in tx.message
    assert len({i.name for i in r.items}) == len(r.items)


def test_report_as_json():
    r = check_environment(CSCS, {"NCCL_NET": "AWS Libfabric", "NCCL_NET_PLUGIN": "ofi"}, 2)
    doc = json.loads(json.dumps(r.to_dict()))
    assert doc["schema"] == SCHEMA == "cordee.envcheck/1"
    assert doc["profile"] == "slingshot-cscs" and doc["family"] == "slingshot" and doc["nnodes"] == 2
    assert doc["exit_code"] == 2 == r.exit_code
    assert set(doc["items"][0]) == {"name", "status", "expected", "actual", "message", "source"}
    assert doc["summary"]["dangerous"] >= 1 and sum(doc["summary"].values()) == len(doc["items"])
    assert {o["name"] for o in doc["optional"]} == {v.name for v in CSCS.optional}


# --- trap 1: NCCL_NET_PLUGIN with NCCL_NET -----------------------------------------------------------


def test_trap_plugin_with_net_is_dangerous():
    r = check_environment(CSCS, full(CSCS, NCCL_NET_PLUGIN="ofi"), 4)
    i = item(r, "NCCL_NET_PLUGIN")
    assert i.status == "dangerous" and r.exit_code == 2
    assert i.actual == "ofi" and "network AWS Libfabric not found" in i.message
    assert "Known issues" in i.source


def test_trap_plugin_checked_even_for_profiles_without_nccl_net():
    single = load("single-node")
    env = full(single, NCCL_NET="AWS Libfabric", NCCL_NET_PLUGIN="ofi")
    assert item(check_environment(single, env, 2), "NCCL_NET_PLUGIN").status == "dangerous"


@pytest.mark.parametrize(
    "env",
    [
        {"NCCL_NET_PLUGIN": "ofi"},  # the plugin alone is the other valid way
        {"NCCL_NET": "IB", "NCCL_NET_PLUGIN": "none"},  # plugins disabled, internal IB: valid
        {"NCCL_NET": "Socket", "NCCL_NET_PLUGIN": "NONE"},
        {"NCCL_NET": "AWS Libfabric", "NCCL_NET_PLUGIN": ""},  # empty = unset
    ],
)
def test_trap_plugin_not_raised_for_valid_pairings(env):
    ib = load("infiniband")
    assert "NCCL_NET_PLUGIN" not in statuses(check_environment(ib, env, 2))


def test_trap_plugin_with_an_internal_net_is_a_warning():
    ib = load("infiniband")
    r = check_environment(ib, full(ib, NCCL_NET_PLUGIN="ofi"), 2)
    assert item(r, "NCCL_NET_PLUGIN").status == "different" and r.exit_code == 1


def test_trap_plugin_none_with_a_plugin_net_is_still_dangerous():
    env = full(CSCS, NCCL_NET_PLUGIN="none")
    assert item(check_environment(CSCS, env, 4), "NCCL_NET_PLUGIN").status == "dangerous"


# --- trap 2: FI_CXI_DEFAULT_TX_SIZE above the maximum ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status"), [("32768", "dangerous"), ("16385", "dangerous"), ("16384", "ok")]
)
def test_trap_tx_size_above_maximum(value, status):
    r = check_environment(CSCS, full(CSCS, FI_CXI_DEFAULT_TX_SIZE=value), 4)
    assert item(r, "FI_CXI_DEFAULT_TX_SIZE").status == status


def test_trap_tx_size_checked_even_when_profile_does_not_list_it():
    ib = load("infiniband")
    r = check_environment(ib, full(ib, FI_CXI_DEFAULT_TX_SIZE="65536"), 2)
    i = item(r, "FI_CXI_DEFAULT_TX_SIZE")
    assert i.status == "dangerous" and i.expected == "<= 16384" and r.exit_code == 2
    hpe = load("slingshot-hpe")  # HPE's own 2048 is fine
    assert check_environment(hpe, hpe.as_env(), 4).exit_code == 0


# --- trap 3: LL128 on Slingshot ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "proto",
    ["^LL128", "^ll128", "^LL,LL128", " ^ LL128 ", "Simple,LL", "simple", "LL", "^LL128;allreduce:^LL128,LL"],
)
def test_trap_ll128_off(proto):
    r = check_environment(CSCS, full(CSCS, NCCL_PROTO=proto), 4)
    assert item(r, "NCCL_PROTO").status != "dangerous"


@pytest.mark.parametrize(
    ("proto", "where"),
    [
        (None, "NCCL_PROTO unset"),
        ("", "NCCL_PROTO unset"),
        ("LL128", "all functions"),
        ("Simple,LL128", "all functions"),
        ("^LL", "all functions"),
        ("^Simple", "all functions"),
        ("allreduce:^LL128", "all functions not listed"),
        ("^LL128;allgather:LL128,Simple", "allgather"),
    ],
)
def test_trap_ll128_on_slingshot_is_dangerous(proto, where):
    r = check_environment(CSCS, full(CSCS, NCCL_PROTO=proto), 4)
    i = item(r, "NCCL_PROTO")
    assert i.status == "dangerous" and r.exit_code == 2
    assert where in i.message and "2001" in i.source and i.expected == "^LL128"


def test_trap_ll128_applies_to_every_slingshot_profile_and_only_those():
    for name in ("slingshot-cscs-2025", "slingshot-hpe"):
        p = load(name)
        assert item(check_environment(p, full(p, NCCL_PROTO=None), 4), "NCCL_PROTO").status == "dangerous"
    for name in ("infiniband", "ethernet-tcp"):
        p = load(name)
        assert check_environment(p, p.as_env(), 4).exit_code == 0  # NCCL_PROTO unset is fine there


def test_misspelt_protocol_is_malformed_and_leaves_ll128_on():
    r = check_environment(CSCS, full(CSCS, NCCL_PROTO="^LL182"), 4)
    i = item(r, "NCCL_PROTO")
    assert i.status == "dangerous" and "'LL182'" in i.message and "LL128 is enabled" in i.message


def test_parse_nccl_proto_grammar():
    assert parse_nccl_proto("^LL128") == ({None: frozenset({"LL", "Simple"})}, [])
    assert parse_nccl_proto("simple,ll") == ({None: frozenset({"LL", "Simple"})}, [])
    entries, bad = parse_nccl_proto("LL128;AllReduce:^ll128;broadcast:Simple")
    assert bad == [] and entries["allreduce"] == {"LL", "Simple"} and entries["broadcast"] == {"Simple"}
    assert parse_nccl_proto("^LL,XL")[1] == ["XL"]
    assert parse_nccl_proto("^LL128;Simple")[1] == ["Simple"]  # only the first entry may omit the function
    assert ll128_scopes("^LL128") == [] and ll128_scopes("allreduce:Simple") == ["all functions not listed"]


# --- trap 4: NCCL_NET on a single node ---------------------------------------------------------------


def test_trap_net_on_single_node_is_a_warning():
    single = load("single-node")
    r = check_environment(single, full(single, NCCL_NET="AWS Libfabric"), 1)
    i = item(r, "NCCL_NET")
    assert i.status == "different" and i.expected == "(unset)" and "VNI" in i.message
    assert r.exit_code == 1
    assert check_environment(single, single.as_env(), 1).exit_code == 0


def test_trap_net_on_single_node_even_with_a_network_profile():
    r = check_environment(CSCS, full(CSCS), 1)
    assert statuses(r) == {"NCCL_NET": "different"} and r.exit_code == 1
    assert check_environment(CSCS, full(CSCS), 2).exit_code == 0
    assert check_environment(CSCS, full(CSCS), None).exit_code == 0  # unknown node count: no claim


# --- trap 5: GPU-aware MPI with NCCL -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["slingshot-cscs", "infiniband", "single-node"])
def test_trap_gpu_aware_mpich_is_dangerous(name):
    p = load(name)
    r = check_environment(p, full(p, MPICH_GPU_SUPPORT_ENABLED="1"), 1 if name == "single-node" else 2)
    i = item(r, "MPICH_GPU_SUPPORT_ENABLED")
    assert i.status == "dangerous" and "deadlock" in i.message and r.exit_code == 2


def test_mpich_gpu_support_off_is_ok():
    ib = load("infiniband")
    assert check_environment(ib, full(ib, MPICH_GPU_SUPPORT_ENABLED="0"), 2).exit_code == 0


# --- values that are not well-formed -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        ("NCCL_CROSS_NIC", "yes", "dangerous"),  # not an integer: NCCL would misread it
        ("FI_CXI_DEFAULT_TX_SIZE", "16k", "dangerous"),  # and trap 2 does not crash on it
        ("FI_CXI_DEFAULT_CQ_SIZE", "1.5e5", "dangerous"),
        ("MPICH_GPU_SUPPORT_ENABLED", "true", "dangerous"),
        ("NCCL_CROSS_NIC", "7", "different"),  # an integer outside the documented range
        ("FI_CXI_RX_MATCH_MODE", "sofware", "different"),  # not a known choice
        ("NCCL_NET_GDR_LEVEL", "NEAR", "different"),
    ],
)
def test_malformed_values_are_flagged_not_crashing(name, value, status):
    r = check_environment(CSCS, full(CSCS, **{name: value}), 4)
    assert item(r, name).status == status and item(r, name).actual == value


@pytest.mark.parametrize(
    ("name", "value"), [("NCCL_SOCKET_NTHREADS", "32"), ("NCCL_MAX_NCHANNELS", "x"), ("NCCL_DEBUG", "LOUD")]
)
def test_values_are_checked_for_variables_outside_the_profile(name, value):
    eth = load("ethernet-tcp")
    r = check_environment(eth, full(eth, **{name: value}), 2)
    assert item(r, name).status in ("different", "dangerous") and item(r, name).expected in (None, "4")


@pytest.mark.parametrize("value", ["PHB", "phb", "5", "SYS", "NVL"])
def test_well_formed_levels(value):
    assert item(
        check_environment(CSCS, full(CSCS, NCCL_NET_GDR_LEVEL=value), 4), "NCCL_NET_GDR_LEVEL"
    ).status in (
        "ok",
        "different",  # differs from PHB, but well-formed
    )
    r = check_environment(load("infiniband"), {"NCCL_NET": "IB", "NCCL_P2P_LEVEL": value}, 2)
    assert "NCCL_P2P_LEVEL" not in statuses(r)


# --- the real CLI ------------------------------------------------------------------------------------


def clean_env(**extra):
    return launch_free(
        prefixes=("NCCL_", "FI_", "TORCH_", "MPICH_"),
        names=("GROUP_WORLD_SIZE", "CUDA_CACHE_DISABLE"),
        **extra,
    )


TWO_NODES = {"RANK": "0", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}  # torchrun-style: 2 nodes


def cli(*args, **env):
    return subprocess.run(
        [CORDEE, "env", "check", *args], env=clean_env(**env), capture_output=True, text=True, timeout=60
    )


def cli_json(*args, **env):
    r = cli(*args, "--json", **env)
    assert r.stderr == "", r.stderr
    return r.returncode, json.loads(r.stdout)


def test_cli_full_profile_exits_0():
    rc, doc = cli_json("--profile", "slingshot-cscs", **TWO_NODES, **CSCS.as_env())
    assert rc == 0 and doc["exit_code"] == 0 and doc["schema"] == "cordee.envcheck/1"
    assert doc["profile"] == "slingshot-cscs" and doc["nnodes"] == 2 and doc["chosen"] == "--profile"
    assert {i["status"] for i in doc["items"]} == {"ok"}


def test_cli_missing_exits_1():
    env = full(CSCS, FI_MR_CACHE_MONITOR=None)
    rc, doc = cli_json("--profile", "slingshot-cscs", **TWO_NODES, **env)
    assert rc == 1 == doc["exit_code"]
    assert [i["name"] for i in doc["items"] if i["status"] != "ok"] == ["FI_MR_CACHE_MONITOR"]


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ({"NCCL_NET_PLUGIN": "ofi"}, "NCCL_NET_PLUGIN"),
        ({"FI_CXI_DEFAULT_TX_SIZE": "32768"}, "FI_CXI_DEFAULT_TX_SIZE"),
        ({"NCCL_PROTO": "^LL"}, "NCCL_PROTO"),
        ({"MPICH_GPU_SUPPORT_ENABLED": "1"}, "MPICH_GPU_SUPPORT_ENABLED"),
        ({"NCCL_CROSS_NIC": "maybe"}, "NCCL_CROSS_NIC"),
    ],
)
def test_cli_dangerous_exits_2(extra, name):
    rc, doc = cli_json("--profile", "slingshot-cscs", **TWO_NODES, **{**CSCS.as_env(), **extra})
    assert rc == 2 == doc["exit_code"]
    assert [(i["name"], i["status"]) for i in doc["items"] if i["status"] != "ok"] == [(name, "dangerous")]


def test_cli_ll128_unset_on_slingshot_exits_2():
    env = full(CSCS, NCCL_PROTO=None)
    rc, doc = cli_json("--profile", "slingshot-hpe", **TWO_NODES, **env)
    assert rc == 2
    assert {i["name"]: i["status"] for i in doc["items"]}["NCCL_PROTO"] == "dangerous"


def test_cli_net_on_single_node_exits_1():
    single = load("single-node")
    rc, doc = cli_json(**single.as_env(), NCCL_NET="AWS Libfabric")  # local launch: one node
    assert doc["profile"] == "single-node" and doc["chosen"] == "suggested" and doc["nnodes"] == 1
    assert rc == 1
    assert [(i["name"], i["status"]) for i in doc["items"] if i["status"] != "ok"] == [
        ("NCCL_NET", "different")
    ]


def test_cli_suggests_a_profile_from_the_launch_environment():
    rc, doc = cli_json(**TWO_NODES)
    assert doc["profile"] == suggest(2) and doc["nnodes"] == 2 and doc["chosen"] == "suggested"
    assert rc in (1, 2)  # nothing set: at least missing values


def test_cli_table_output():
    r = cli("--profile", "slingshot-cscs", **TWO_NODES, **full(CSCS, NCCL_PROTO=None, NCCL_NET_PLUGIN="ofi"))
    assert r.returncode == 2 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("profile slingshot-cscs (slingshot; --profile), nnodes 2")
    assert any(line.split()[:2] == ["dangerous", "NCCL_PROTO"] for line in lines)
    assert any(line.split()[:2] == ["dangerous", "NCCL_NET_PLUGIN"] for line in lines)
    assert any(line.split()[:2] == ["ok", "NCCL_NET"] for line in lines)
    assert "optional (reported, not applied by default):" in r.stdout
    assert lines[-1] == "summary: 11 ok, 0 missing, 0 different, 2 dangerous -> dangerous values (exit 2)"


def test_cli_unknown_profile_exits_2_with_one_line():
    r = cli("--profile", "slingshot-cray", **TWO_NODES)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert "unknown profile 'slingshot-cray'" in r.stderr and "slingshot-cscs-2025" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_help_lists_the_options():
    r = subprocess.run([CORDEE, "env", "check", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--profile" in r.stdout and "--json" in r.stdout


def test_cli_storage_section_and_exit_code(tmp_path):
    """The storage checks (cordee.storage.checks) in the table; a failing one raises the exit code.
    A tiny free-space threshold cannot be crossed by a real filesystem upward, so 100% is used to make
    the checkpoint filesystem fail (free < 100%) on this machine's real /dev/shm."""
    env = {**CSCS.as_env(), **TWO_NODES, "HOME": str(tmp_path)}
    r = cli("--profile", "slingshot-cscs", "--data", str(tmp_path), "--checkpoints", "/dev/shm", **env)
    assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("storage:")
    assert lines[start + 1].split()[:2] == ["ok", "storage.cache.TRITON_CACHE_DIR"]
    assert any("skipped: /dev/shm is on tmpfs, not Lustre" in line for line in lines[start:])
    assert lines[-1].startswith("summary: ")
    r = cli("--profile", "slingshot-cscs", "--checkpoints", "/dev/shm", "--json",
            **env, CORDEE_FREE_WARN_PCT="100", CORDEE_FREE_FAIL_PCT="100")  # fmt: skip
    doc = json.loads(r.stdout)
    assert r.returncode == 2 == doc["exit_code"]
    assert {f["check"]: f["status"] for f in doc["storage"]}["storage.space"] == "fail"
    r = cli("--profile", "slingshot-cscs", **env, CORDEE_FREE_WARN_PCT="x", CORDEE_CKPT_DIR="/dev/shm")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "CORDEE_FREE_WARN_PCT" in r.stderr
