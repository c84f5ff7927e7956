"""Process groups for the bench engines and the preflight: which device a rank uses, and a
`torch.distributed` group formed from the launch environment with a timeout.

The rank, world size and rendezvous address come from `cordee.launch.launchenv.detect` (so a
Slurm step without RANK/WORLD_SIZE works too; torchrun-style variables as set by `cordee launch`
or torchrun otherwise). torch is imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import NamedTuple

from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError, shown
from cordee.launch.launchenv import LaunchEnv, detect

DEVICES = ("auto", "cpu", "cuda")


class GroupError(CordeeError):
    """The group did not form (a peer missing, a port taken): the job's state is unknown, exit 3."""

    exit_code = EXIT_UNKNOWN


class GroupInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "cuda:K"
    backend: str  # "nccl" or "gloo"
    launch: LaunchEnv


def first_line(error: BaseException) -> str:
    """torch's messages run over many lines; the first non-empty one says what happened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def resolve_device(device: str = "auto", local_rank: int = 0) -> str:
    """ "cpu" or "cuda:K". auto: the GPU of this local rank when torch sees GPUs, else the CPU.
    One visible GPU is device 0 (Slurm gave the task its own); with several, the local rank's
    (the binding policy of `cordee launch`). Two ranks never share a GPU silently."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise InputError(f"device {shown(device)} is not one of {', '.join(DEVICES)} (or cuda:K)")
    if device == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        raise InputError(f"device {device}: torch {torch.__version__} sees no CUDA GPU")
    count = torch.cuda.device_count()
    if device.startswith("cuda:"):
        index = device.removeprefix("cuda:")
        if not index.isascii() or not index.isdigit() or int(index) >= count:
            raise InputError(f"device {shown(device)}: this process sees {count} GPU(s), cuda:0..{count - 1}")
        return f"cuda:{int(index)}"
    if count == 1:
        return "cuda:0"
    if local_rank < count:
        return f"cuda:{local_rank}"
    raise InputError(
        f"local rank {local_rank} but this process sees {count} GPUs: two ranks would share one GPU"
    )


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def init_group(
    backend: str | None = None,
    timeout_s: float = 60.0,
    *,
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> GroupInfo:
    """Form the default process group from the launch environment. Every collective of the group
    then fails after `timeout_s` instead of waiting forever (gloo; NCCL's watchdog uses it too).
    backend None: nccl for a GPU, gloo for the CPU; "gloo" on a GPU job gives a CPU-only group.
    One rank alone needs no rendezvous (an in-memory store, no port)."""
    import torch
    import torch.distributed as dist

    launch = detect(os.environ if environ is None else environ)
    dev = resolve_device(device, launch.local_rank)
    backend = backend or backend_for(dev)
    if backend not in ("nccl", "gloo"):
        raise InputError(f"backend {shown(backend)} is not nccl or gloo")
    if backend == "nccl" and not dev.startswith("cuda"):
        raise InputError("backend nccl needs a GPU device; the CPU uses gloo")
    if dist.is_initialized():
        raise CordeeError("a torch.distributed process group is already initialized in this process")
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs: dict = {"backend": backend, "rank": launch.rank, "world_size": launch.world_size}
    if backend == "nccl":
        torch.cuda.set_device(dev)
        kwargs["device_id"] = torch.device(dev)  # eager NCCL init: a missing peer shows here, bounded
    if launch.world_size == 1:
        kwargs["store"] = dist.HashStore()
    else:
        host = f"[{launch.master_addr}]" if ":" in launch.master_addr else launch.master_addr
        kwargs["init_method"] = f"tcp://{host}:{launch.master_port}"
    try:
        dist.init_process_group(timeout=timeout, **kwargs)
    except (RuntimeError, ValueError) as e:  # DistStoreError, DistNetworkError: RuntimeErrors
        raise GroupError(
            f"{backend} process group of {launch.world_size} ranks at {launch.master_addr}:"
            f"{launch.master_port} not formed within {timeout_s:g} s (rank {launch.rank}): {first_line(e)}"
        ) from None
    return GroupInfo(launch.rank, launch.world_size, launch.local_rank, dev, backend, launch)


def cpu_group(timeout_s: float = 60.0):
    """A gloo group over every rank of the default group (e.g. control messages on a GPU job,
    where the default group is NCCL). Every rank must call it, in the same order."""
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))


def destroy() -> None:
    """Tear the default group down (nothing when there is none). After a failed collective the
    teardown itself may fail; the group is gone either way."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except (RuntimeError, ValueError):
            pass
