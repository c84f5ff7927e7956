"""GPU paths of the launcher on a real NVIDIA node (runs on the lent accelerator; skipped
elsewhere because there is no GPU to bind to).

Checks that sysfs discovery agrees with CUDA (PCI order, UUIDs), that each rank's
CORDEE_CUDA_DEVICE/LOCAL_RANK points at its own GPU, that its CPUs are the GPU's local cores,
and that an NCCL all_reduce over `cordee launch --nproc-per-node N` gives the right sum."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cordee.launch.binding import plan_binding, read_gpus

GPUS = read_gpus()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU on this machine (runs on the lent GPU node)"),
]
CORDEE = [sys.executable, "-m", "cordee"]  # works where the console script is not on PATH


def nvidia_smi(query):
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_sysfs_discovery_matches_nvidia_smi():
    smi_bus = [b.lower()[-12:] for b in nvidia_smi("pci.bus_id")]  # 00000000:3B:00.0 -> 0000:3b:00.0
    assert [g.pci_bus_id[-12:] for g in GPUS] == sorted(smi_bus)
    uuids = nvidia_smi("uuid")
    if all(g.uuid for g in GPUS):
        assert sorted(g.uuid for g in GPUS) == sorted(uuids)


def test_binding_uses_local_cores():
    allowed = frozenset(os.sched_getaffinity(0))
    for rank in range(len(GPUS)):
        b = plan_binding(GPUS, None, rank, len(GPUS), allowed)
        assert b.gpu == GPUS[rank]
        if GPUS[rank].local_cpus & allowed:
            assert b.cpus <= GPUS[rank].local_cpus


NCCL_ALL_REDUCE = textwrap.dedent("""
    import datetime, json, os, torch, torch.distributed as dist
    dev = int(os.environ["CORDEE_CUDA_DEVICE"])
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=120))
    t = torch.full((1 << 20,), float(dist.get_rank() + 1), device="cuda")
    dist.all_reduce(t)
    torch.cuda.synchronize()
    props = torch.cuda.get_device_properties(dev)
    # one write(2) per line: ranks share the pipe, and print() writes text and newline apart
    ok = bool((t == t[0]).all())
    os.write(1, (json.dumps({"rank": dist.get_rank(), "dev": dev, "sum": t[0].item(), "ok": ok,
                      "pci": f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}",
                      "cpus": sorted(os.sched_getaffinity(0))}) + "\\n").encode())
    dist.destroy_process_group()
""")


def test_nccl_all_reduce_through_cordee_launch():
    n = len(GPUS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK"))}
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # multicast stays off on shared machines
    r = subprocess.run(
        [*CORDEE, "launch", "--nproc-per-node", str(n), "--", sys.executable, "-c", NCCL_ALL_REDUCE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    views = sorted(
        (json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")), key=lambda v: v["rank"]
    )
    assert [v["rank"] for v in views] == list(range(n))
    expected = n * (n + 1) / 2
    for v in views:
        assert v["sum"] == expected and v["ok"]
        assert v["dev"] == v["rank"]
        gpu = GPUS[v["rank"]]
        assert gpu.pci_bus_id.rsplit(".", 1)[0] == v["pci"], (gpu, v)  # torch gives no PCI function
        if gpu.local_cpus & frozenset(os.sched_getaffinity(0)):
            assert set(v["cpus"]) <= gpu.local_cpus


@pytest.mark.skipif(len(GPUS) < 2, reason="needs 2 GPUs: one Slurm-style task per GPU")
def test_one_gpu_per_task_as_slurm_gives_it():
    """Two tasks as `srun --ntasks=2 --gpus-per-task=1` starts them: the same SLURM_* step
    variables, each task with CUDA_VISIBLE_DEVICES naming its own GPU. Each must use cuda:0,
    which must be its own physical GPU, and the NCCL all_reduce across them must be right."""
    node = os.uname().nodename
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK"))}
    base.update(
        NCCL_NVLS_ENABLE="0",
        SLURM_JOB_ID="4242",
        SLURM_STEP_ID="0",
        SLURM_NTASKS="2",
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_STEP_NODELIST=node,
        SLURM_TASKS_PER_NODE="2",
    )
    procs = []
    for task in range(2):
        env = {
            **base,
            "SLURM_PROCID": str(task),
            "SLURM_LOCALID": str(task),
            "CUDA_VISIBLE_DEVICES": str(task),
        }
        procs.append(
            subprocess.Popen(
                [*CORDEE, "launch", "-v", "--", sys.executable, "-c", NCCL_ALL_REDUCE],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "one-gpu-per-task" in err
    views = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outs), key=lambda v: v["rank"])
    for v in views:
        assert v["dev"] == 0 and v["sum"] == 3.0 and v["ok"]
        assert GPUS[v["rank"]].pci_bus_id.rsplit(".", 1)[0] == v["pci"], v  # its own physical GPU
