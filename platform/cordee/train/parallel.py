"""Process group, device and model wrapping for `cordee train`.

Ranks come from the variables `cordee launch` (or torchrun) sets: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT (env://). Without them the trainer is one process, still in a process
group of one (an in-memory store), so FSDP2, DCP and the per-step all_reduce run the same code
at every world size. Every collective is bounded by the group's timeout.

Sharding is FSDP2 (`fully_shard` per transformer block, then the root; torchtitan's layout): on
GPUs with bf16 compute and fp32 gradient reduction over fp32 master weights (MixedPrecisionPolicy).
On CPU (gloo) FSDP2 runs in fp32 when gloo has the collectives it needs; otherwise DDP, and the
setup line says which.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from cordee.errors import InputError, shown
from cordee.numbers import parse_int

MAX_WORLD = 1 << 20


@dataclass(frozen=True)
class Ranks:
    rank: int
    world_size: int
    local_rank: int
    launched: bool  # True when RANK/WORLD_SIZE came from a launcher (env:// rendezvous)


def read_ranks(environ: Mapping[str, str]) -> Ranks:
    """This process's place in the job, from the launcher's variables (no torch: the CLI checks
    sizes against the world size before anything starts)."""
    if "WORLD_SIZE" not in environ and "RANK" not in environ:
        tasks = environ.get("SLURM_NTASKS") or environ.get("SLURM_NPROCS")
        if environ.get("SLURM_STEP_ID") is not None and tasks not in (None, "", "1"):
            raise InputError(
                f"SLURM_NTASKS={shown(tasks)} but RANK/WORLD_SIZE are not set: each task would train "
                "alone; run `srun ... cordee launch -- cordee train ...`"
            )
        return Ranks(0, 1, 0, launched=False)
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(key):
            raise InputError(f"{key} is not set (a launcher sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")
    world = parse_int(environ["WORLD_SIZE"], "WORLD_SIZE", lo=1, hi=MAX_WORLD)
    rank = parse_int(environ["RANK"], "RANK", lo=0, hi=world - 1)
    local = parse_int(environ.get("LOCAL_RANK", "0"), "LOCAL_RANK", lo=0, hi=world - 1)
    return Ranks(rank, world, local, launched=True)


@dataclass(frozen=True)
class Dist:
    """The initialized process group as the loop sees it."""

    rank: int
    world_size: int
    local_rank: int
    node: str
    device: object  # torch.device
    backend: str  # "nccl" | "gloo"
    timeout_s: float
    device_name: str  # GPU model, or "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def where(self) -> str:
        return f"rank {self.rank} on node {self.node}"


def pick_device(preference: str, local_rank: int):
    """cuda:N (N = 0 when the launcher left one GPU visible, else LOCAL_RANK) or cpu."""
    import torch

    if preference not in ("auto", "cuda", "cpu"):
        raise InputError(f"device={shown(preference)}: allowed auto, cuda, cpu")
    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        raise InputError("device='cuda' but torch sees no CUDA GPU (use device=auto or device=cpu)")
    if preference == "cpu" or not has_cuda:
        return torch.device("cpu")
    count = torch.cuda.device_count()
    index = 0 if count == 1 else local_rank
    if index >= count:
        raise InputError(f"LOCAL_RANK={local_rank} but this process sees {count} GPUs")
    return torch.device("cuda", index)


def init(ranks: Ranks, device_preference: str, timeout_s: float) -> Dist:
    """Join (or make) the process group; every later collective times out after timeout_s."""
    import datetime

    import torch
    import torch.distributed as dist

    device = pick_device(device_preference, ranks.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs: dict = {"backend": backend, "timeout": timeout}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device  # eager NCCL init: a bad GPU fails here, not at the first step
    if ranks.launched:
        kwargs["init_method"] = "env://"
        kwargs.update(rank=ranks.rank, world_size=ranks.world_size)
    else:
        kwargs.update(store=dist.HashStore(), rank=0, world_size=1)
    try:
        dist.init_process_group(**kwargs)
    except Exception as e:  # rendezvous refused, timed out, NCCL init failed
        raise InputError(
            f"rank {ranks.rank} on node {socket.gethostname()}: process group ({backend}) did not form "
            f"within {timeout_s:g} s: {first_line(e)}"
        ) from None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return Dist(
        ranks.rank, ranks.world_size, ranks.local_rank, socket.gethostname(), device, backend, timeout_s, name
    )


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def shutdown() -> None:
    """Leave the group together: a rank that tears down its gloo pairs while a peer still uses
    them can make that peer abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _fully_shard():
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # torch >= 2.6
    except ImportError:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy


def gloo_can_shard() -> bool:
    """FSDP2 needs all_gather_into_tensor and reduce_scatter_tensor; older gloo lacks the latter."""
    import warnings

    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    try:
        with warnings.catch_warnings():  # torch 2.13 renames them; FSDP2 calls what exists
            warnings.simplefilter("ignore", FutureWarning)
            out = torch.zeros(1)
            dist.reduce_scatter_tensor(out, torch.ones(world))
            gathered = torch.zeros(world)
            dist.all_gather_into_tensor(gathered, torch.ones(1))
    except (RuntimeError, NotImplementedError):
        return False
    return bool(out.item() == world and gathered.sum().item() == world)


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:  # torch < 2.5
        return False
    return True


def wrap_model(model, d: Dist, *, precision: str, compile: bool, activation_checkpointing: bool):
    """The model ready to train: per-block activation checkpointing, then per-block compile, then
    sharding (the order torchtitan uses). Returns (model, one line describing the setup)."""
    import torch

    on_gpu = d.device.type == "cuda"
    notes = []
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.layers):
            model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
        notes.append("activation checkpointing per block")
    if compile:
        for block in model.layers:
            block.compile()  # in place: state-dict keys stay those of the plain model
        notes.append("compile per block")
        if on_gpu and flex_attention_available():
            model.flex_attention = True  # packed rows: only the visible tiles are computed
    mixed = precision == "bf16" and on_gpu
    if precision == "bf16" and not on_gpu:
        notes.append("bf16 requested, CPU runs fp32")
    if on_gpu or gloo_can_shard():
        fully_shard, MixedPrecisionPolicy = _fully_shard()
        kwargs = {}
        if mixed:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        last = len(model.layers) - 1
        for i, block in enumerate(model.layers):
            # the last block's parameters are needed again at once by backward: keep them gathered
            fully_shard(block, reshard_after_forward=i < last, **kwargs)
        fully_shard(model, **kwargs)
        mode = "FSDP2 (bf16 params and compute, fp32 reduce and master weights)" if mixed else "FSDP2 (fp32)"
    else:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
        mode = "DDP (this torch's gloo lacks reduce_scatter, so no FSDP2 on CPU), fp32"
    line = f"{d.world_size} rank(s), {d.backend}, {d.device_name}: {mode}"
    return model, "; ".join([line, *notes])
