"""GPU and CPU binding of one launched task.

Policy (documented in README "GPU and CPU binding"):
- CUDA_VISIBLE_DEVICES lists one GPU (Slurm gave each task its own, e.g. --gpus-per-task=1):
  the task uses that GPU, which is device 0 inside the process.
- all of the node's GPUs visible (unset, or a list at least as long as the node's tasks):
  the task uses the GPU at its local rank, device LOCAL_RANK inside the process.
- fewer visible GPUs than tasks on the node: error, never two ranks silently on one GPU.
- no GPU at all: a CPU rank.
CPU affinity: the cores local to the task's GPU (sysfs `local_cpulist` of its PCI device),
intersected with what the task may use, shared in contiguous equal slices between the tasks
whose GPUs have the same local cores (same NUMA node). When Slurm already bound the task to
cores (SLURM_CPU_BIND_TYPE), Slurm's binding is kept. OMP_NUM_THREADS = cores of the task.

`read_gpus` reads sysfs (the only I/O here); `plan_binding` is pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from cordee.errors import InputError, shown
from cordee.numbers import as_int

NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")  # VGA controller, 3D controller
MAX_CPUS = 1 << 16  # above any kernel's NR_CPUS (8192 at most today); bounds a garbled CPU list


# Immutable typed records; NamedTuple, not dataclass, to keep `inspect` out of start-up (launchenv.py).
class GpuInfo(NamedTuple):
    pci_bus_id: str  # "0000:3b:00.0", sysfs spelling
    local_cpus: frozenset[int]
    numa_node: int
    uuid: str | None = None


class Binding(NamedTuple):
    mode: str  # "one-gpu-per-task" | "all-visible" | "cpu"
    device_index: int | None  # CUDA device index inside the process
    gpu: GpuInfo | None
    cpus: frozenset[int]
    cpus_changed: bool  # False: leave the affinity as it is
    omp_threads: int
    reason: str

    def as_dict(self) -> dict:
        """The JSON form shared by `env show` and `launch --dry-run`."""
        return {
            "mode": self.mode,
            "cuda_device": self.device_index,
            "gpu": self.gpu.pci_bus_id if self.gpu else None,
            "cpus": format_cpulist(self.cpus),
            "omp_threads": self.omp_threads,
            "reason": self.reason,
        }


def parse_cpulist(text: str) -> frozenset[int]:
    """'0-3,8,10-11' -> {0,1,2,3,8,10,11}"""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        a, b = as_int(lo), as_int(hi or lo)
        if a is None or b is None or not 0 <= a <= b < MAX_CPUS:
            raise InputError(f"cannot parse CPU list {shown(text)}: expected N or N-M below {MAX_CPUS}")
        cpus.update(range(a, b + 1))
    return frozenset(cpus)


def format_cpulist(cpus: frozenset[int] | set[int]) -> str:
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _read(*parts: str) -> str | None:
    try:
        with open(os.path.join(*parts)) as f:
            return f.read().strip()
    except OSError:
        return None


def read_gpus(root: str = "/") -> list[GpuInfo]:
    """NVIDIA GPUs of this node from sysfs, in PCI bus order (= CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
    base = os.path.join(root, "sys/bus/pci/devices")
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return []
    gpus = []
    for name in entries:
        dev = os.path.join(base, name)
        if _read(dev, "vendor") != NVIDIA_VENDOR:
            continue
        if not (_read(dev, "class") or "").startswith(GPU_CLASSES):
            continue
        cpus = parse_cpulist(_read(dev, "local_cpulist") or "")
        numa = as_int(_read(dev, "numa_node") or "")
        gpus.append(GpuInfo(name, cpus, -1 if numa is None else numa, _read_uuid(root, name)))
    return gpus


def _read_uuid(root: str, bus_id: str) -> str | None:
    info = _read(root, "proc/driver/nvidia/gpus", bus_id, "information")
    for line in (info or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "GPU UUID":
            return value.strip()
    return None


def resolve_visible(visible: str | None, gpus: list[GpuInfo]) -> list[GpuInfo]:
    """GPUs named by CUDA_VISIBLE_DEVICES (indices into PCI order, or GPU-UUIDs)."""
    if visible is None:
        return list(gpus)
    out = []
    for item in (x.strip() for x in visible.split(",")):
        if not item:
            continue
        idx = as_int(item)
        if idx is not None:
            if idx < 0:
                break  # CUDA stops at the first invalid index
            if idx >= len(gpus):
                raise InputError(
                    f"CUDA_VISIBLE_DEVICES={visible!r}: index {idx} but this node has {len(gpus)} GPUs"
                )
            out.append(gpus[idx])
        elif item.startswith(("GPU-", "MIG-")):
            match = [g for g in gpus if g.uuid and g.uuid.startswith(item)]
            if len(match) != 1:
                raise InputError(f"CUDA_VISIBLE_DEVICES={visible!r}: no single GPU matches {item!r}")
            out.append(match[0])
        else:
            raise InputError(f"CUDA_VISIBLE_DEVICES={visible!r}: {item!r} is neither an index nor a GPU UUID")
    return out


def slurm_bound_cpus(env: Mapping[str, str]) -> bool:
    """True when Slurm itself pinned the task to CPUs (then cordee keeps Slurm's binding)."""
    bind = env.get("SLURM_CPU_BIND_TYPE", "").strip().strip(",").lower()
    return bool(bind) and bind not in ("none", "none,")


def _slice(cpus: frozenset[int], index: int, count: int) -> frozenset[int]:
    ordered = sorted(cpus)
    if count <= 1 or len(ordered) < count:
        return frozenset(ordered)
    n = len(ordered)
    return frozenset(ordered[index * n // count : (index + 1) * n // count])


def plan_binding(
    gpus: list[GpuInfo],
    visible: str | None,
    local_rank: int,
    local_world_size: int,
    allowed_cpus: frozenset[int],
    keep_cpu_binding: bool = False,
) -> Binding:
    shown = resolve_visible(visible, gpus)
    if not shown:
        mode, device, gpu = "cpu", None, None
    elif len(shown) == 1 and visible is not None:
        if len(gpus) < local_world_size and len(gpus) > 0 and local_world_size > 1:
            raise InputError(
                f"{local_world_size} tasks on this node but it has only {len(gpus)} GPU(s): "
                "start at most one task per GPU"
            )
        mode, device, gpu = "one-gpu-per-task", 0, shown[0]
    elif len(shown) >= local_world_size:
        mode, device, gpu = "all-visible", local_rank, shown[local_rank]
    else:
        raise InputError(
            f"{local_world_size} tasks on this node but only {len(shown)} GPU(s) visible "
            f"(CUDA_VISIBLE_DEVICES={visible if visible is not None else 'unset'}): "
            "start at most one task per GPU, or give each task its own GPU (--gpus-per-task=1)"
        )

    if keep_cpu_binding:
        cpus, changed, why = allowed_cpus, False, "Slurm bound the task to CPUs; binding kept"
    elif gpu is None:
        cpus = _slice(allowed_cpus, local_rank, local_world_size)
        changed, why = cpus != allowed_cpus, f"CPU rank: slice {local_rank + 1} of {local_world_size}"
    else:
        cpus, changed, why = _gpu_cpus(
            gpu, shown if mode == "all-visible" else gpus, local_rank, local_world_size, allowed_cpus
        )
    return Binding(mode, device, gpu, cpus, changed, max(1, len(cpus)), why)


def _gpu_cpus(gpu, peer_gpus, local_rank, local_world_size, allowed):
    local = gpu.local_cpus & allowed
    if not local:
        return allowed, False, f"GPU {gpu.pci_bus_id} has no local cores this task may use; affinity kept"
    # Local rank j uses peer_gpus[j]; the tasks whose GPUs share my cores split them.
    sharing = [
        j for j in range(min(local_world_size, len(peer_gpus))) if peer_gpus[j].local_cpus & allowed == local
    ]
    index = sharing.index(local_rank) if local_rank in sharing else 0
    cpus = _slice(local, index, len(sharing) or 1)
    why = f"cores local to GPU {gpu.pci_bus_id}, slice {index + 1} of {len(sharing) or 1}"
    return cpus, cpus != allowed, why


def plan_task_binding(
    environ: Mapping[str, str], local_rank: int, local_world_size: int, gpus: list[GpuInfo]
) -> Binding:
    """The binding of the calling process's task: its visible GPUs, the CPUs it may use now,
    and whether Slurm already pinned it."""
    return plan_binding(
        gpus,
        environ.get("CUDA_VISIBLE_DEVICES"),
        local_rank,
        local_world_size,
        frozenset(os.sched_getaffinity(0)),
        keep_cpu_binding=slurm_bound_cpus(environ),
    )
