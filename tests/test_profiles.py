"""Fabric profiles as data: every shipped profile loads and is sourced, inheritance, bad files, suggest()."""

import os
import subprocess
import sys
import textwrap

import pytest

from cordee import profiles
from cordee.errors import InputError
from cordee.profiles import FAMILIES, Profile, ProfileVar, load, names, suggest
from cordee.profiles.check import check_environment

REQUIRED = [
    "slingshot-cscs",
    "slingshot-cscs-2025",
    "slingshot-hpe",
    "infiniband",
    "ethernet-tcp",
    "single-node",
]
TORCH_LEVEL = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "MPICH_GPU_SUPPORT_ENABLED", "CUDA_CACHE_DISABLE")


def test_required_profiles_are_shipped():
    assert set(REQUIRED) <= set(names())
    assert names() == sorted(names())
    assert os.path.isfile(os.path.join(profiles.DATA_DIR, "slingshot-cscs.toml"))


@pytest.mark.parametrize("name", REQUIRED)
def test_every_profile_loads_and_every_variable_is_sourced(name):
    p = load(name)
    assert isinstance(p, Profile) and p.name == name
    assert p.description.strip() and p.family in FAMILIES
    assert p.variables, "a profile applies at least one variable"
    seen = set()
    for v in p.variables + p.optional:
        assert isinstance(v, ProfileVar)
        assert isinstance(v.value, str)
        assert v.source.strip(), f"{name}: {v.name} has no source"
        assert v.note.strip(), f"{name}: {v.name} has no note"
        assert v.name not in seen, f"{name}: {v.name} listed twice"
        seen.add(v.name)
    assert p.as_env() == {v.name: v.value for v in p.variables}
    assert not set(p.as_env()) & {v.name for v in p.optional}


@pytest.mark.parametrize("name", REQUIRED)
def test_every_profile_passes_its_own_check(name):
    """The data agrees with the checker: applied + optional values are well-formed, no trap fires."""
    p = load(name)
    nnodes = 1 if p.family == "local" else 4
    env = {**p.as_env(), **{v.name: v.value for v in p.optional}}
    report = check_environment(p, env, nnodes)
    bad = [(i.name, i.status, i.message) for i in report.items if i.status != "ok"]
    assert bad == [] and report.exit_code == 0


def test_family_and_torch_level_variables_are_where_they_belong():
    for name in ("slingshot-cscs", "slingshot-cscs-2025", "slingshot-hpe"):
        p = load(name)
        assert p.family == "slingshot"
        assert p.as_env()["NCCL_NET"] == "AWS Libfabric"
        assert p.as_env()["NCCL_PROTO"] == "^LL128"
        assert p.as_env()["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
        assert p.as_env()["MPICH_GPU_SUPPORT_ENABLED"] == "0"
        assert "NCCL_NET_PLUGIN" not in p.as_env()
    for name in ("slingshot-cscs", "slingshot-cscs-2025"):
        assert all(load(name).as_env()[k] for k in TORCH_LEVEL)
    single = load("single-node")
    assert single.family == "local" and "NCCL_NET" not in single.as_env()
    assert single.as_env()["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert load("infiniband").as_env()["NCCL_NET"] == "IB"
    assert load("ethernet-tcp").as_env()["NCCL_NET"] == "Socket"
    assert load("infiniband").family == "infiniband" and load("ethernet-tcp").family == "ethernet"


def test_source_disagreements_are_recorded_not_silent():
    cscs = load("slingshot-cscs")
    assert "0" in cscs.get("NCCL_CROSS_NIC").note and "disagree" in cscs.get("NCCL_CROSS_NIC").note
    assert "32768" in cscs.get("FI_CXI_DEFAULT_TX_SIZE").note
    assert cscs.as_env()["FI_CXI_DEFAULT_TX_SIZE"] == "16384"
    assert "disagree" in load("slingshot-cscs-2025").get("NCCL_CROSS_NIC").note
    hpe_tx = load("slingshot-hpe").get("FI_CXI_DEFAULT_TX_SIZE")
    assert hpe_tx.value == "2048" and "16384" in hpe_tx.note


def test_hang_workaround_and_channels_are_optional_in_the_baseline():
    opt = {v.name: v.value for v in load("slingshot-cscs").optional}
    assert opt["FI_CXI_RDZV_GET_MIN"] == opt["FI_CXI_RDZV_THRESHOLD"] == opt["FI_CXI_RDZV_EAGER_SIZE"] == "0"
    assert opt["NCCL_NCHANNELS_PER_NET_PEER"] == "4"
    assert not {"FI_CXI_RDZV_GET_MIN", "NCCL_NCHANNELS_PER_NET_PEER"} & set(load("slingshot-cscs").as_env())


def test_inheritance_of_the_2025_stack():
    base, new = load("slingshot-cscs"), load("slingshot-cscs-2025")
    assert new.extends == "slingshot-cscs" and base.extends is None
    assert new.family == "slingshot"
    env = new.as_env()
    for k, v in base.as_env().items():  # everything the baseline applies is inherited ...
        if k != "FI_CXI_RX_MATCH_MODE":
            assert env[k] == v
    assert env["FI_CXI_RX_MATCH_MODE"] == "hybrid"  # ... except what it overrides
    assert base.as_env()["FI_CXI_RX_MATCH_MODE"] == "software"
    assert env["FI_CXI_RDZV_PROTO"] == "alt_read" and env["FI_PROVIDER"] == "cxi"
    for k in ("FI_CXI_RDZV_GET_MIN", "FI_CXI_RDZV_THRESHOLD", "FI_CXI_RDZV_EAGER_SIZE"):
        assert env[k] == "0"  # promoted from optional to applied
        assert k not in {v.name for v in new.optional}
    opt = {v.name for v in new.optional}
    assert {"NCCL_NCHANNELS_PER_NET_PEER", "NCCL_MAX_NCHANNELS", "NCCL_PXN_DISABLE"} <= opt


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(InputError) as e:
        load("slingshot")
    msg = str(e.value)
    assert "unknown profile 'slingshot'" in msg
    assert all(n in msg for n in REQUIRED)
    assert "\n" not in msg


def test_path_like_names_are_unknown_profiles():
    with pytest.raises(InputError, match="unknown profile"):
        load("../data/slingshot-cscs")


# --- data files in a temporary directory -------------------------------------------------------------

VAR = '[variables.{name}]\nvalue = "{value}"\nsource = "NCCL docs env.html"\nnote = "why"\n'


def write(d, name, text):
    (d / f"{name}.toml").write_text(textwrap.dedent(text))


def base_text(family="ethernet", extra=""):
    return f'description = "base"\nfamily = "{family}"\n' + VAR.format(name="A_VAR", value="1") + extra


def test_tmp_dir_inheritance_overrides_and_moves_between_tables(tmp_path):
    write(
        tmp_path,
        "base",
        base_text()
        + VAR.format(name="B_VAR", value="2")
        + '[optional.C_VAR]\nvalue = "3"\nsource = "s"\nnote = "n"\n',
    )
    write(
        tmp_path,
        "child",
        'description = "child"\nextends = "base"\n'
        + VAR.format(name="B_VAR", value="20")
        + VAR.format(name="C_VAR", value="30")
        + '[optional.A_VAR]\nvalue = "1"\nsource = "s"\nnote = "demoted"\n',
    )
    assert names(tmp_path) == ["base", "child"]
    child = load("child", data_dir=tmp_path)
    assert child.family == "ethernet" and child.extends == "base"
    assert child.as_env() == {"B_VAR": "20", "C_VAR": "30"}
    assert [v.name for v in child.optional] == ["A_VAR"]
    assert child.get("A_VAR").note == "demoted"


def test_tmp_dir_three_level_chain(tmp_path):
    write(tmp_path, "a", base_text())
    write(tmp_path, "b", 'description = "b"\nextends = "a"\n' + VAR.format(name="B_VAR", value="2"))
    write(tmp_path, "c", 'description = "c"\nextends = "b"\nfamily = "local"\n')
    c = load("c", data_dir=tmp_path)
    assert c.family == "local" and c.as_env() == {"A_VAR": "1", "B_VAR": "2"}


def test_inheritance_cycle_is_detected(tmp_path):
    write(tmp_path, "x", 'description = "x"\nextends = "y"\n')
    write(tmp_path, "y", 'description = "y"\nextends = "z"\n')
    write(tmp_path, "z", 'description = "z"\nextends = "x"\n')
    with pytest.raises(InputError, match=r"cycle x -> y -> z -> x"):
        load("x", data_dir=tmp_path)
    write(tmp_path, "self", 'description = "s"\nextends = "self"\n')
    with pytest.raises(InputError, match="cycle self -> self"):
        load("self", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('description = "x"\nfamily = "ethernet"\n[variables.A\n', "not valid TOML"),
        ('family = "ethernet"\n', "field 'description' is required"),
        ('description = "x"\n', "field 'family' is required"),
        ('description = "x"\nfamily = "token-ring"\n', "field 'family' is 'token-ring'; allowed: slingshot"),
        ('description = "x"\nfamily = "ethernet"\ncolour = "red"\n', "unknown field(s) colour"),
        (
            'description = "x"\nfamily = "ethernet"\n[variables.A]\nvalue = 1\nsource = "s"\nnote = "n"\n',
            "field 'variables.A.value' must be a string",
        ),
        (
            'description = "x"\nfamily = "ethernet"\n[variables.A]\nvalue = "1"\nnote = "n"\n',
            "field 'variables.A.source' must be a non-empty string",
        ),
        (
            'description = "x"\nfamily = "ethernet"\n[optional.A]\nvalue = "1"\nsource = " "\nnote = "n"\n',
            "field 'optional.A.source' must be a non-empty string",
        ),
        (
            'description = "x"\nfamily = "ethernet"\n[variables.A]\nvalue = "1"\nsource = "s"\n',
            "field 'variables.A.note' must be a non-empty string",
        ),
        (
            'description = "x"\nfamily = "ethernet"\n[variables.A]\nvalue = "1"\nsource = "s"\nnote = "n"\n'
            'why = "?"\n',
            "field 'variables.A': unknown key(s) why",
        ),
        ('description = "x"\nfamily = "ethernet"\nvariables = 3\n', "field 'variables' must be a table"),
        (
            'description = "x"\nfamily = "ethernet"\n[variables]\nA = "1"\n',
            "field 'variables.A' must be a table",
        ),
        (
            'description = "x"\nfamily = "ethernet"\n[variables."BAD-NAME"]\nvalue = "1"\nsource = "s"\n'
            'note = "n"\n',
            "not a valid environment variable name",
        ),
        ('description = "x"\nextends = "nowhere"\n', "field 'extends': unknown profile 'nowhere'"),
        (
            'description = "x"\nfamily = "ethernet"\n'
            + VAR.format(name="A", value="1")
            + '[optional.A]\nvalue = "1"\nsource = "s"\nnote = "n"\n',
            "A listed in both 'variables' and 'optional'",
        ),
    ],
)
def test_malformed_profile_file_gives_a_clear_error(tmp_path, text, expected):
    write(tmp_path, "bad", text)
    with pytest.raises(InputError) as e:
        load("bad", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "bad.toml") in msg, "the error names the file"
    assert expected in msg


def test_error_in_a_parent_names_the_parent_file(tmp_path):
    write(tmp_path, "parent", 'description = "p"\nfamily = "ethernet"\n[variables.A]\nvalue = 1\n')
    write(tmp_path, "kid", 'description = "k"\nextends = "parent"\n')
    with pytest.raises(InputError, match=r"parent\.toml: field 'variables\.A\.value'"):
        load("kid", data_dir=tmp_path)


def test_empty_or_missing_data_dir_has_no_profiles(tmp_path):
    assert names(tmp_path) == [] and names(tmp_path / "nope") == []
    with pytest.raises(InputError, match=r"known profiles: \(none\)"):
        load("single-node", data_dir=tmp_path)


# --- suggest() ---------------------------------------------------------------------------------------


def mkroot(tmp_path, *paths):
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        if p.endswith("/"):
            (tmp_path / p).mkdir()
        else:
            (tmp_path / p).touch()
    return str(tmp_path)


def test_suggest_single_node_wins_over_hardware(tmp_path):
    assert suggest(1, root=mkroot(tmp_path, "dev/cxi0", "sys/class/infiniband/mlx5_0/")) == "single-node"


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["dev/cxi0", "dev/cxi1"], "slingshot-cscs"),
        (["sys/class/cxi/cxi0/"], "slingshot-cscs"),
        (["dev/cxi0", "sys/class/infiniband/mlx5_0/"], "slingshot-cscs"),
        (["sys/class/infiniband/mlx5_0/"], "infiniband"),
        (["sys/class/infiniband/"], "ethernet-tcp"),  # the class exists but has no devices
        (["sys/class/cxi/"], "ethernet-tcp"),
        (["dev/null"], "ethernet-tcp"),
        ([], "ethernet-tcp"),
    ],
)
@pytest.mark.parametrize("nnodes", [2, 64, None])
def test_suggest_by_hardware(tmp_path, paths, expected, nnodes):
    assert suggest(nnodes, root=mkroot(tmp_path, *paths)) == expected


def test_suggested_profiles_exist():
    assert {suggest(1), suggest(2)} <= set(names())


def test_loading_profiles_imports_nothing_heavy():
    code = (
        "import sys, cordee.profiles as p, cordee.profiles.check as c\n"
        "[p.load(n) for n in p.names()]\n"
        "heavy = {'torch', 'numpy', 'pynvml', 'rich', 'yaml', 'jinja2'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
