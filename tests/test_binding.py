"""GPU/CPU binding policy. The node layouts are written as sysfs trees in tmp dirs and read by
the same `read_gpus` that reads /sys on a real node (tests/gpu/ runs it on a real GPU)."""

from pathlib import Path

import pytest

from cordee.errors import InputError
from cordee.launch.binding import (
    format_cpulist,
    parse_cpulist,
    plan_binding,
    read_gpus,
    slurm_bound_cpus,
)


def make_node(root: Path, gpus: list[tuple[str, str, int]], uuids=True) -> str:
    """gpus: (pci bus id, local_cpulist, numa node). Adds a non-NVIDIA device as noise."""
    devs = root / "sys/bus/pci/devices"
    nic = devs / "0000:01:00.0"
    nic.mkdir(parents=True)
    (nic / "vendor").write_text("0x17db\n")  # HPE Cassini NIC
    (nic / "class").write_text("0x020000\n")
    for i, (bus, cpus, numa) in enumerate(gpus):
        d = devs / bus
        d.mkdir(parents=True)
        (d / "vendor").write_text("0x10de\n")
        (d / "class").write_text("0x030200\n")
        (d / "local_cpulist").write_text(cpus + "\n")
        (d / "numa_node").write_text(f"{numa}\n")
        if uuids:
            info = root / "proc/driver/nvidia/gpus" / bus
            info.mkdir(parents=True)
            (info / "information").write_text(f"Model: \t\t GH200\nGPU UUID: \t GPU-{i:04d}-aaaa\n")
    return str(root)


# Alps-like GH200 node: 4 GPUs, 72 cores each on its own NUMA node.
GH200 = [
    ("0009:01:00.0", "0-71", 0),
    ("0019:01:00.0", "72-143", 1),
    ("0029:01:00.0", "144-215", 2),
    ("0039:01:00.0", "216-287", 3),
]
ALL = frozenset(range(288))


@pytest.fixture
def gh200(tmp_path):
    return read_gpus(make_node(tmp_path, GH200))


def test_read_gpus_pci_order_and_uuid(tmp_path):
    gpus = read_gpus(make_node(tmp_path, list(reversed(GH200))))
    assert [g.pci_bus_id for g in gpus] == [g[0] for g in GH200]
    assert gpus[1].local_cpus == frozenset(range(72, 144))
    assert gpus[2].numa_node == 2
    assert gpus[0].uuid.startswith("GPU-")


def test_no_gpus_is_a_cpu_rank(tmp_path):
    assert read_gpus(str(tmp_path)) == []
    b = plan_binding([], None, local_rank=1, local_world_size=2, allowed_cpus=frozenset(range(8)))
    assert (b.mode, b.device_index, b.gpu) == ("cpu", None, None)
    assert b.cpus == frozenset(range(4, 8)) and b.omp_threads == 4


def test_all_visible_one_task_per_gpu(gh200):
    for rank in range(4):
        b = plan_binding(gh200, None, rank, 4, ALL)
        assert (b.mode, b.device_index, b.gpu.pci_bus_id) == ("all-visible", rank, GH200[rank][0])
        assert b.cpus == frozenset(range(72 * rank, 72 * rank + 72))
        assert b.omp_threads == 72 and b.cpus_changed


def test_slurm_gave_each_task_its_gpu(gh200):
    b = plan_binding(gh200, "2", local_rank=2, local_world_size=4, allowed_cpus=ALL)
    assert (b.mode, b.device_index, b.gpu.pci_bus_id) == ("one-gpu-per-task", 0, "0029:01:00.0")
    assert b.cpus == frozenset(range(144, 216))


def test_visible_by_uuid(gh200):
    b = plan_binding(gh200, "GPU-0003-aaaa", 0, 4, ALL)
    assert b.gpu.pci_bus_id == "0039:01:00.0"


def test_fewer_gpus_than_tasks_is_an_error(gh200):
    with pytest.raises(InputError, match="8 tasks on this node but only 4 GPU"):
        plan_binding(gh200, None, 5, 8, ALL)
    with pytest.raises(InputError, match="only 2 GPU"):
        plan_binding(gh200, "0,1", 2, 4, ALL)
    with pytest.raises(InputError, match="has only 4 GPU"):
        plan_binding(gh200, "0", 0, 8, ALL)  # a single visible GPU cannot be one each for 8 tasks


def test_gpus_sharing_a_numa_node_split_its_cores(tmp_path):
    # Two GPUs per socket (a typical x86 node): the two ranks of a socket split its 32 cores.
    gpus = read_gpus(
        make_node(
            tmp_path,
            [
                ("0000:17:00.0", "0-31", 0),
                ("0000:31:00.0", "0-31", 0),
                ("0000:b1:00.0", "32-63", 1),
                ("0000:ca:00.0", "32-63", 1),
            ],
        )
    )
    cores = [plan_binding(gpus, None, r, 4, frozenset(range(64))).cpus for r in range(4)]
    assert cores == [
        frozenset(range(0, 16)),
        frozenset(range(16, 32)),
        frozenset(range(32, 48)),
        frozenset(range(48, 64)),
    ]


def test_restricted_allowed_set_is_respected(gh200):
    allowed = frozenset(range(60, 80))
    b = plan_binding(gh200, None, 1, 4, allowed)
    assert b.cpus == frozenset(range(72, 80))


def test_slurm_binding_is_kept(gh200):
    assert slurm_bound_cpus({"SLURM_CPU_BIND_TYPE": "mask_cpu:"})
    assert not slurm_bound_cpus({"SLURM_CPU_BIND_TYPE": "none"})
    b = plan_binding(gh200, None, 1, 4, frozenset({3, 4}), keep_cpu_binding=True)
    assert b.cpus == frozenset({3, 4}) and not b.cpus_changed


@pytest.mark.parametrize(
    "visible, fragment",
    [
        ("7", "index 7 but this node has 4"),
        ("abc", "neither an index nor a GPU UUID"),
        ("GPU-zzzz", "no single GPU matches"),
    ],
)
def test_bad_cuda_visible_devices(gh200, visible, fragment):
    with pytest.raises(InputError, match=fragment):
        plan_binding(gh200, visible, 0, 1, ALL)


def test_cpulist_round_trip():
    for text in ["0-3,8,10-11", "5", "0-287", ""]:
        assert format_cpulist(parse_cpulist(text)) == text
    with pytest.raises(InputError):
        parse_cpulist("1-x")
