"""The environment plan of `cordee launch`: what is set, kept and overridden, and why."""

from cordee.launch.binding import plan_binding
from cordee.launch.launchenv import detect
from cordee.launch.plan import plan_environment

SLURM = {
    "SLURM_JOB_ID": "77",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "2",
    "SLURM_NNODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_STEP_NODELIST": "n1",
    "SLURM_TASKS_PER_NODE": "2",
}


def by_name(plan):
    return {a.name: a for a in plan.actions}


def test_slurm_rank_variables_override_stale_ones():
    environ = {**SLURM, "RANK": "0"}
    plan = plan_environment(environ, detect(environ), None)
    acts = by_name(plan)
    assert plan.env["RANK"] == "1" and acts["RANK"].action == "overridden" and acts["RANK"].previous == "0"
    assert acts["WORLD_SIZE"].action == "set" and plan.env["MASTER_ADDR"] == "n1"


def test_profile_variables_never_overwrite_the_user():
    environ = {**SLURM, "NCCL_CROSS_NIC": "0"}
    pvars = {"NCCL_CROSS_NIC": ("1", "cscs-docs nccl.md"), "NCCL_PROTO": ("^LL128", "cscs-docs")}
    plan = plan_environment(environ, detect(environ), None, "p", pvars)
    acts = by_name(plan)
    assert plan.env["NCCL_CROSS_NIC"] == "0"
    assert acts["NCCL_CROSS_NIC"].action == "kept-user" and acts["NCCL_CROSS_NIC"].proposed == "1"
    assert "kept user's NCCL_CROSS_NIC=0" in acts["NCCL_CROSS_NIC"].describe()
    assert plan.env["NCCL_PROTO"] == "^LL128" and acts["NCCL_PROTO"].origin == "profile p"
    assert "cscs-docs" in acts["NCCL_PROTO"].describe()


def test_binding_variables():
    environ = {**SLURM, "OMP_NUM_THREADS": "2"}
    bnd = plan_binding([], None, 1, 2, frozenset(range(8)))
    plan = plan_environment(environ, detect(environ), bnd)
    assert plan.env["OMP_NUM_THREADS"] == "2"  # the user's value
    assert by_name(plan)["OMP_NUM_THREADS"].proposed == "4"
    assert plan.env["CORDEE_CPUS"] == "4-7"
    assert "CORDEE_CUDA_DEVICE" not in plan.env  # CPU rank


def test_torchrun_values_are_kept():
    environ = {
        "TORCHELASTIC_RUN_ID": "x",
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1234",
    }
    plan = plan_environment(environ, detect(environ), None)
    assert {k: plan.env[k] for k in ("RANK", "MASTER_PORT")} == {"RANK": "1", "MASTER_PORT": "1234"}
