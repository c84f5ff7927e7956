"""Launch environment detection: an environment dict in, a frozen `LaunchEnv` out.

Pure functions only (no I/O besides what the caller passes), so every Slurm/torchrun corner
case is a unit test. Precedence: a torchrun agent's children (TORCHELASTIC_RUN_ID) > a Slurm
step (SLURM_PROCID + SLURM_STEP_ID) > torchrun-style variables set by hand > plain local.
Under Slurm, rank variables always come from SLURM_*: a RANK exported in a batch script is
propagated by srun to every task and would give all of them the same rank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

from cordee.errors import InputError, shown
from cordee.numbers import parse_int

# Ports 20000-29999: below Linux's ephemeral range (32768+) and away from the usual 29500.
PORT_BASE = 20000
PORT_SPAN = 10000
LOCAL_MASTER_ADDR = "127.0.0.1"
DEFAULT_LOCAL_PORT = 29500
MAX_TASKS_PER_NODE = 1 << 16  # far above any node's cores; bounds what a garbled value can ask for


class LaunchEnv(NamedTuple):
    """How this process was launched. An immutable, typed record: typing.NamedTuple rather than
    a frozen dataclass because `dataclasses` imports `inspect`, which alone costs a third of the
    start-up budget of `cordee env show` (bench_cli.py)."""

    scheduler: str  # "slurm" | "torchrun" | "local"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    nnodes: int
    nodes: tuple[str, ...]
    master_addr: str
    master_port: int
    job_id: str | None = None
    step_id: str | None = None
    # Where master_port came from: "derived" (job/step id), "user" (MASTER_PORT), "default".
    master_port_source: str = "derived"
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        d = self._asdict()
        d["nodes"] = list(self.nodes)
        d["notes"] = list(self.notes)
        return d

    def torch_env(self) -> dict[str, str]:
        """The variables torch.distributed (env://) and torchrun users expect."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def derive_master_port(job_id: str | int, step_id: str | int | None) -> int:
    """Port from job and step id. Concurrent steps of one job differ in step id, and
    (j*101 + s) mod 10000 differs for any two step ids less than 10000 apart."""
    j = parse_int(str(job_id), "SLURM_JOB_ID", lo=0)
    s = parse_int(str(step_id), "SLURM_STEP_ID", lo=0) if step_id not in (None, "") else 0
    return PORT_BASE + (j * 101 + s) % PORT_SPAN


def parse_tasks_per_node(value: str, max_nodes: int) -> list[int]:
    """Slurm's compact form: '2(x3),1' -> [2, 2, 2, 1]; more than max_nodes entries is refused
    before the list is built ('1(x1000000000)' would be a billion entries)."""
    out: list[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*([0-9]+)(?:\(x([0-9]+)\))?\s*", part, re.ASCII)
        if not m:
            raise InputError(f"SLURM_TASKS_PER_NODE={shown(value)} is not of the form '2(x3),1'")
        count = parse_int(m.group(1), "SLURM_TASKS_PER_NODE", lo=0, hi=MAX_TASKS_PER_NODE)
        repeat = parse_int(m.group(2) or "1", "SLURM_TASKS_PER_NODE repeat count", lo=1)
        if len(out) + repeat > max_nodes:
            raise InputError(f"SLURM_TASKS_PER_NODE={shown(value)} describes more than {max_nodes} nodes")
        out.extend([count] * repeat)
    return out


def _int(env: Mapping[str, str], *names: str, default: int | None = None, minimum: int = 0) -> int:
    for name in names:
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        return parse_int(raw, name, lo=minimum)
    if default is None:
        raise InputError(f"{' or '.join(names)} is not set")
    return default


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        v = env.get(name)
        if v:
            return v
    return None


def _user_port(env: Mapping[str, str]) -> int | None:
    raw = env.get("MASTER_PORT")
    if not raw:
        return None
    return parse_int(raw, "MASTER_PORT", lo=1, hi=65535)


def _port_or_default(env: Mapping[str, str]) -> tuple[int, str]:
    """MASTER_PORT from the user, else torch's usual default (launches without a job id)."""
    user_port = _user_port(env)
    return (user_port, "user") if user_port is not None else (DEFAULT_LOCAL_PORT, "default")


def is_slurm_step(env: Mapping[str, str]) -> bool:
    return "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env)


def detect(env: Mapping[str, str]) -> LaunchEnv:
    if env.get("TORCHELASTIC_RUN_ID"):
        return _from_torchrun(env)
    if is_slurm_step(env):
        return _from_slurm(env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return _from_torchrun(env)
    return _local(env)


def _from_slurm(env: Mapping[str, str]) -> LaunchEnv:
    from cordee.launch.hostlist import expand  # deferred: only Slurm launches need it

    rank = _int(env, "SLURM_PROCID")
    local_rank = _int(env, "SLURM_LOCALID")
    # Step-level values first: a step may use a subset of the job's allocation.
    world = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS", minimum=1)
    nnodes = _int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES", minimum=1)
    node_rank = _int(env, "SLURM_NODEID")
    nodelist = _first(env, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if not nodelist:
        raise InputError("Slurm step without SLURM_STEP_NODELIST or SLURM_JOB_NODELIST")
    try:
        nodes = tuple(expand(nodelist))
    except InputError as e:
        raise InputError(f"cannot use the step's nodelist: {e}") from None
    tpn_raw = _first(env, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    job_id = _first(env, "SLURM_JOB_ID", "SLURM_JOBID")
    step_id = _first(env, "SLURM_STEP_ID", "SLURM_STEPID")

    if len(nodes) != nnodes:
        raise InputError(f"nodelist {nodelist!r} has {len(nodes)} nodes but SLURM_NNODES={nnodes}")
    if rank >= world:
        raise InputError(f"SLURM_PROCID={rank} is not below SLURM_NTASKS={world}")
    if node_rank >= nnodes:
        raise InputError(f"SLURM_NODEID={node_rank} is not below SLURM_NNODES={nnodes}")
    if tpn_raw:
        tpn = parse_tasks_per_node(tpn_raw, max_nodes=nnodes)
        if len(tpn) != nnodes:
            raise InputError(f"SLURM_TASKS_PER_NODE={tpn_raw!r} describes {len(tpn)} nodes, not {nnodes}")
        if sum(tpn) != world:
            raise InputError(f"SLURM_TASKS_PER_NODE={tpn_raw!r} adds up to {sum(tpn)} tasks, not {world}")
        local_world = tpn[node_rank]
    elif world % nnodes == 0:
        local_world = world // nnodes
    else:
        raise InputError("SLURM_TASKS_PER_NODE is not set and tasks do not divide evenly over nodes")
    if local_rank >= local_world:
        raise InputError(f"SLURM_LOCALID={local_rank} is not below this node's {local_world} tasks")

    notes = []
    port, port_source = _port_or_default(env)
    if port_source == "default" and job_id:
        port, port_source = derive_master_port(job_id, step_id), "derived"
    elif port_source == "default":
        notes.append("no SLURM_JOB_ID: MASTER_PORT falls back to the default")
    master = env.get("MASTER_ADDR") or nodes[0]
    if master != nodes[0]:
        notes.append(f"MASTER_ADDR={master} set by the user (first node of the step is {nodes[0]})")
    if nnodes > 1 and _is_loopback(master):
        raise InputError(
            f"MASTER_ADDR={master} is a loopback address on a {nnodes}-node step: every node would "
            "rendezvous with itself; unset it (cordee uses the step's first node)"
        )
    return LaunchEnv(
        scheduler="slurm",
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=node_rank,
        nnodes=nnodes,
        nodes=nodes,
        master_addr=master,
        master_port=port,
        job_id=job_id,
        step_id=step_id,
        master_port_source=port_source,
        notes=tuple(notes),
    )


def _is_loopback(addr: str) -> bool:
    return addr == "localhost" or addr.startswith("127.") or addr in ("::1", "[::1]")


def _from_torchrun(env: Mapping[str, str]) -> LaunchEnv:
    world = _int(env, "WORLD_SIZE", minimum=1)
    rank = _int(env, "RANK")
    local_rank = _int(env, "LOCAL_RANK", default=0)
    local_world = _int(env, "LOCAL_WORLD_SIZE", default=world, minimum=1)
    if rank >= world:
        raise InputError(f"RANK={rank} is not below WORLD_SIZE={world}")
    if local_rank >= local_world:
        raise InputError(f"LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_world}")
    nnodes = _int(env, "GROUP_WORLD_SIZE", default=max(1, world // local_world), minimum=1)
    node_rank = _int(env, "GROUP_RANK", "NODE_RANK", default=rank // local_world)
    master = env.get("MASTER_ADDR") or LOCAL_MASTER_ADDR
    port, port_source = _port_or_default(env)
    return LaunchEnv(
        scheduler="torchrun",
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=node_rank,
        nnodes=nnodes,
        nodes=(master,) if nnodes == 1 else (),
        master_addr=master,
        master_port=port,
        job_id=env.get("TORCHELASTIC_RUN_ID") or None,
        master_port_source=port_source,
    )


def _local(env: Mapping[str, str]) -> LaunchEnv:
    port, port_source = _port_or_default(env)
    return LaunchEnv(
        scheduler="local",
        rank=0,
        world_size=1,
        local_rank=0,
        local_world_size=1,
        node_rank=0,
        nnodes=1,
        nodes=(env.get("HOSTNAME") or "localhost",),
        master_addr=env.get("MASTER_ADDR") or LOCAL_MASTER_ADDR,
        master_port=port,
        master_port_source=port_source,
    )


def expand_local_ranks(base: LaunchEnv, nproc: int, index: int) -> LaunchEnv:
    """The view of local process `index` when each launched task starts `nproc` processes
    (`cordee launch --nproc-per-node N`, outside Slurm or with one Slurm task per node)."""
    return base._replace(
        rank=base.rank * nproc + index,
        world_size=base.world_size * nproc,
        local_rank=base.local_rank * nproc + index,
        local_world_size=base.local_world_size * nproc,
    )
