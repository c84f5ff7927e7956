"""Launch environment detection: Slurm, torchrun and local, with the bad inputs that must exit 2."""

import pytest

from cordee.errors import InputError
from cordee.launch.launchenv import (
    PORT_BASE,
    PORT_SPAN,
    derive_master_port,
    detect,
    expand_local_ranks,
    parse_tasks_per_node,
)


def slurm_env(**over):
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "3",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "7",
        "SLURM_NNODES": "4",
        "SLURM_NODEID": "2",
        "SLURM_STEP_NODELIST": "nid[001004-001006],nid002000",
        "SLURM_JOB_NODELIST": "nid[001000-001010]",
        "SLURM_TASKS_PER_NODE": "2(x3),1",
    }
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def test_slurm_step():
    le = detect(slurm_env())
    assert le.scheduler == "slurm"
    assert (le.rank, le.world_size, le.local_rank, le.local_world_size) == (5, 7, 1, 2)
    assert (le.node_rank, le.nnodes) == (2, 4)
    assert le.nodes == ("nid001004", "nid001005", "nid001006", "nid002000")
    assert le.master_addr == "nid001004"  # first node of the STEP, not of the job
    assert le.master_port == derive_master_port(4242, 3)
    assert le.job_id == "4242" and le.step_id == "3"
    assert le.torch_env()["WORLD_SIZE"] == "7"


def test_last_node_gets_the_remainder_of_tasks_per_node():
    le = detect(slurm_env(SLURM_PROCID="6", SLURM_LOCALID="0", SLURM_NODEID="3"))
    assert le.local_world_size == 1


def test_step_values_win_over_job_values():
    env = slurm_env(
        SLURM_STEP_NUM_TASKS="2",
        SLURM_STEP_NUM_NODES="1",
        SLURM_STEP_NODELIST="nid001007",
        SLURM_STEP_TASKS_PER_NODE="2",
        SLURM_PROCID="1",
        SLURM_NODEID="0",
    )
    le = detect(env)
    assert (le.world_size, le.nnodes, le.local_world_size, le.nodes) == (2, 1, 2, ("nid001007",))


def test_stale_torch_variables_do_not_win_under_slurm():
    # A RANK exported in a batch script reaches every task through srun.
    le = detect(slurm_env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"))
    assert (le.scheduler, le.rank, le.world_size) == ("slurm", 5, 7)


def test_user_master_port_wins():
    le = detect(slurm_env(MASTER_PORT="31337"))
    assert (le.master_port, le.master_port_source) == (31337, "user")


@pytest.mark.parametrize("job", [1, 4242, 99999999, 4294967295])
def test_concurrent_steps_of_one_job_get_distinct_ports(job):
    ports = {derive_master_port(job, s) for s in range(200)}
    assert len(ports) == 200
    assert all(PORT_BASE <= p < PORT_BASE + PORT_SPAN for p in ports)


def test_tasks_per_node_forms():
    assert parse_tasks_per_node("4", 1) == [4]
    assert parse_tasks_per_node("2(x3),1", 4) == [2, 2, 2, 1]
    assert parse_tasks_per_node("1,3(x2)", 3) == [1, 3, 3]


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("1(x1000000000)", "more than 4 nodes"),  # a billion-entry list, refused before it is built
        ("2(x3),1(x2)", "more than 4 nodes"),
        ("1" * 5000, "not an integer"),  # int() refuses more than 4,300 digits with a ValueError
        ("\u00b2", "not of the form"),  # '²'.isdigit() is True, int('²') fails
        ("\u0663", "not of the form"),  # Arabic-Indic 3: int() takes it, Slurm never writes it
        ("4(x0)", "must be >= 1"),
        ("70000", "must be <= 65536"),
    ],
)
def test_tasks_per_node_bounds(value, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_tasks_per_node(value, 4)


@pytest.mark.parametrize(
    "over",
    [
        {"SLURM_PROCID": "9" * 5000},
        {"SLURM_NTASKS": "\u00b9\u00b2"},
        {"SLURM_NTASKS": "\u0664"},
        {"MASTER_PORT": "2" * 4400},
        {"SLURM_JOB_ID": "7" * 4400},
        {"SLURM_TASKS_PER_NODE": "2(x" + "9" * 4400 + ")"},
    ],
    ids=["huge-procid", "superscripts", "arabic-indic", "huge-port", "huge-job-id", "huge-repeat"],
)
def test_hostile_numbers_are_one_clear_error(over):
    with pytest.raises(InputError) as e:
        detect(slurm_env(**over))
    message = str(e.value)
    assert "\n" not in message and len(message) < 300


def test_torchrun_children():
    env = {
        "TORCHELASTIC_RUN_ID": "abc",
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "3",
        "LOCAL_WORLD_SIZE": "4",
        "GROUP_RANK": "0",
        "GROUP_WORLD_SIZE": "2",
        "MASTER_ADDR": "n1",
        "MASTER_PORT": "29400",
        "SLURM_PROCID": "0",
        "SLURM_STEP_ID": "0",
    }
    le = detect(env)
    assert (le.scheduler, le.rank, le.world_size, le.nnodes, le.master_addr, le.master_port) == (
        "torchrun",
        3,
        8,
        2,
        "n1",
        29400,
    )


def test_local():
    le = detect({})
    assert (le.scheduler, le.rank, le.world_size, le.master_addr) == ("local", 0, 1, "127.0.0.1")


def test_expand_local_ranks():
    base = detect(
        slurm_env(SLURM_NTASKS="4", SLURM_TASKS_PER_NODE="1(x4)", SLURM_PROCID="2", SLURM_LOCALID="0")
    )
    views = [expand_local_ranks(base, 4, i) for i in range(4)]
    assert [v.rank for v in views] == [8, 9, 10, 11]
    assert {v.world_size for v in views} == {16}
    assert [v.local_rank for v in views] == [0, 1, 2, 3]
    assert {v.local_world_size for v in views} == {4}


@pytest.mark.parametrize(
    "over, fragment",
    [
        ({"SLURM_PROCID": "x"}, "SLURM_PROCID='x' is not an integer"),
        ({"SLURM_PROCID": "-1"}, "must be >= 0"),
        ({"SLURM_PROCID": "7"}, "not below SLURM_NTASKS=7"),
        ({"SLURM_NODEID": "4"}, "not below SLURM_NNODES=4"),
        ({"SLURM_LOCALID": "2"}, "not below this node's 2 tasks"),
        ({"SLURM_NNODES": "3"}, "has 4 nodes but SLURM_NNODES=3"),
        ({"SLURM_STEP_NODELIST": "nid[001-"}, "cannot use the step's nodelist: bad hostlist"),
        ({"SLURM_STEP_NODELIST": None, "SLURM_JOB_NODELIST": None}, "SLURM_STEP_NODELIST"),
        ({"SLURM_TASKS_PER_NODE": "2(x3"}, "is not of the form"),
        ({"SLURM_TASKS_PER_NODE": "2(x2),1"}, "describes 3 nodes, not 4"),
        ({"SLURM_TASKS_PER_NODE": "1(x4)"}, "adds up to 4 tasks, not 7"),
        ({"SLURM_JOB_ID": "abc"}, "SLURM_JOB_ID='abc' is not an integer"),
        ({"MASTER_PORT": "70000"}, "must be <= 65535"),
        ({"MASTER_ADDR": "localhost"}, "every node would rendezvous with itself"),
        ({"SLURM_NTASKS": "0"}, "must be >= 1"),
    ],
)
def test_bad_slurm_input(over, fragment):
    with pytest.raises(InputError) as e:
        detect(slurm_env(**over))
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_torchrun_input():
    with pytest.raises(InputError, match="RANK=4 is not below WORLD_SIZE=4"):
        detect({"RANK": "4", "WORLD_SIZE": "4"})
