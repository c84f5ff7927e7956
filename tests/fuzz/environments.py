"""Hostile environments: a consistent Slurm step or torchrun launch with a few variables broken,
fabric-profile variables with odd values, and the overrides `cordee net show` reads."""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.hostile import hostlists, numbers, paths, repeat_counts, text, values

SLURM_NUMBERS = [
    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NNODES", "SLURM_JOB_NUM_NODES",
    "SLURM_NODEID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_NUM_TASKS",
    "SLURM_STEP_NUM_NODES",
]  # fmt: skip
TORCH_NUMBERS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                 "NODE_RANK", "MASTER_PORT", "OMP_NUM_THREADS"]  # fmt: skip
PROFILES = ["slingshot-cscs", "slingshot-cscs-2025", "slingshot-hpe", "infiniband", "ethernet-tcp",
            "single-node", "none"]  # fmt: skip
PROFILE_VARS = [
    "CUDA_CACHE_DISABLE", "FI_CXI_DEFAULT_CQ_SIZE", "FI_CXI_DEFAULT_TX_SIZE", "FI_CXI_DISABLE_HOST_REGISTER",
    "FI_CXI_RDZV_EAGER_SIZE", "FI_CXI_RDZV_GET_MIN", "FI_CXI_RDZV_PROTO", "FI_CXI_RDZV_THRESHOLD",
    "FI_CXI_RX_MATCH_MODE", "FI_MR_CACHE_MAX_COUNT", "FI_MR_CACHE_MAX_SIZE", "FI_MR_CACHE_MONITOR",
    "FI_PROVIDER", "MPICH_GPU_SUPPORT_ENABLED", "NCCL_CROSS_NIC", "NCCL_DEBUG", "NCCL_MAX_NCHANNELS",
    "NCCL_NCHANNELS_PER_NET_PEER", "NCCL_NET", "NCCL_NET_GDR_C2C", "NCCL_NET_GDR_LEVEL", "NCCL_NET_GDR_READ",
    "NCCL_P2P_LEVEL", "NCCL_PROTO", "NCCL_ALGO", "NCCL_PXN_DISABLE", "NCCL_SOCKET_IFNAME",
    "NCCL_SOCKET_NTHREADS", "NCCL_NSOCKS_PERTHREAD", "NCCL_BUFFSIZE", "NCCL_IB_DISABLE", "NCCL_IB_HCA",
    "NCCL_NET_PLUGIN", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
]  # fmt: skip
NET_PATHS = ["NCCL_NET_PLUGIN", "NCCL_CONF_FILE", "CORDEE_NCCL_LIBRARY", "CORDEE_LIBFABRIC_LIBRARY"]


def _value_for(name: str) -> st.SearchStrategy[str]:
    if name in SLURM_NUMBERS or name in TORCH_NUMBERS:
        return numbers()
    if name.endswith("NODELIST"):
        return hostlists()
    if name.endswith("TASKS_PER_NODE"):
        return repeat_counts()
    if name == "CUDA_VISIBLE_DEVICES":
        return st.lists(numbers() | st.sampled_from(["GPU-1234", "MIG-1", "all", "none"]), max_size=3).map(
            ",".join
        )
    if name in ("CORDEE_PROFILE",):
        return st.sampled_from(PROFILES) | text() | paths()
    if name == "NCCL_PROTO":
        return (
            st.sampled_from(["^LL128", "LL,Simple", "allreduce:LL;^LL128", "^", ";", "LL128;x:", ""]) | text()
        )
    return values()


@st.composite
def _slurm(draw) -> dict[str, str]:
    nnodes, per_node = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    world = nnodes * per_node
    rank = draw(st.integers(0, world - 1))
    nodes = f"nid[001-{nnodes:03d}]" if nnodes > 1 else "nid001"
    return {
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank % per_node),
        "SLURM_NODEID": str(rank // per_node),
        "SLURM_NTASKS": str(world),
        "SLURM_NNODES": str(nnodes),
        "SLURM_STEP_ID": str(draw(st.integers(0, 5))),
        "SLURM_JOB_ID": str(draw(st.integers(1, 10**7))),
        "SLURM_JOB_NODELIST": nodes,
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_TASKS_PER_NODE": f"{per_node}(x{nnodes})",
    }


@st.composite
def _torchrun(draw) -> dict[str, str]:
    world = draw(st.integers(1, 8))
    rank = draw(st.integers(0, world - 1))
    env = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
    }
    if draw(st.booleans()):
        env["TORCHELASTIC_RUN_ID"] = draw(st.sampled_from(["none", "job-1"]) | text())
    return env


LAUNCH_VARS = [
    *SLURM_NUMBERS, *TORCH_NUMBERS, "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST", "SLURM_NODELIST",
    "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_CPU_BIND_TYPE", "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR", "HOSTNAME", "CORDEE_PROFILE", "TORCHELASTIC_RUN_ID", "COLUMNS",
]  # fmt: skip


@st.composite
def _mutated(draw, base: dict[str, str], names: list[str], most: int) -> dict[str, str | None]:
    env: dict[str, str | None] = dict(base)
    for name in draw(st.lists(st.sampled_from(names), max_size=most, unique=True)):
        env[name] = draw(st.none() | _value_for(name)) if name in base else draw(_value_for(name))
    return env


def launch_env(most: int = 3) -> st.SearchStrategy[dict[str, str | None]]:
    """A Slurm step, a torchrun child or a plain local run, with up to `most` variables broken."""
    base = st.one_of(_slurm(), _torchrun(), st.just({}))
    return base.flatmap(lambda b: _mutated(b, LAUNCH_VARS, most))


def profile_env() -> st.SearchStrategy[dict[str, str | None]]:
    return _mutated({}, PROFILE_VARS, 6)


def net_env() -> st.SearchStrategy[dict[str, str | None]]:
    named = st.fixed_dictionaries({}, optional={name: paths() | values() for name in NET_PATHS})
    conf = st.fixed_dictionaries({}, optional={"NCCL_CONF_FILE": st.just("{CWD}/nccl.conf")})
    other = st.fixed_dictionaries(
        {},
        optional={
            "NCCL_NET": st.sampled_from(["AWS Libfabric", "Socket", "IB"]) | text(),
            "FI_PROVIDER": st.sampled_from(["tcp", "cxi", "^tcp"]) | text(),
            "NCCL_DEBUG": st.sampled_from(["INFO", "TRACE"]) | text(),
            "LD_LIBRARY_PATH": paths() | text(),
        },
    )
    return st.builds(lambda a, b, c: {**a, **b, **c}, named, other, conf)
