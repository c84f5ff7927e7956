"""sysfs views of NICs (cordee.interconnect.sysfs) on fake trees laid out as the kernel does,
and on this machine's real /sys."""

from __future__ import annotations

import os
from pathlib import Path

from cordee.interconnect import sysfs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _pci_device(root: Path, slot: str, driver: str) -> Path:
    dev = root / "sys/devices/pci0000:00" / slot
    (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "driver").symlink_to(root / "sys/bus/pci/drivers" / driver)
    return dev


def _netdev(root: Path, name: str, *, arphrd=1, state="up", speed="200000", mtu=9000, pci=None, driver=None):
    d = root / "sys/class/net" / name
    d.mkdir(parents=True)
    _write(d / "type", str(arphrd))
    _write(d / "operstate", state)
    _write(d / "mtu", str(mtu))
    if speed is not None:
        _write(d / "speed", speed)
    if pci:
        (d / "device").symlink_to(_pci_device(root, pci, driver))


def _cxi(root: Path, n: int, slot: str, *, cassini=2, state="up", speed="BS_200G", dev_node=True):
    device = root / "sys/class/cxi" / f"cxi{n}" / "device"
    _write(device / "uevent", f"DRIVER=cxi_ss1\nPCI_SLOT_NAME={slot}\nPCI_ID=17DB:0501")
    _write(device / "numa_node", str(n))
    if cassini == 2:
        _write(device / "port/0/link/state", state)
        _write(device / "port/0/link/speed", speed)
        _write(device / "port/0/media/type", "electrical")
    else:
        _write(device / "port/link", state)
        _write(device / "port/speed", speed)
        _write(device / "port/media", "AOC")
    if dev_node:
        _write(root / "dev" / f"cxi{n}", "")


def test_alps_like_node(tmp_path):
    _netdev(tmp_path, "lo", arphrd=772, state="unknown", speed=None, mtu=65536)
    _netdev(tmp_path, "nmn0", speed="25000", pci="0000:01:00.0", driver="mlx5_core")
    for n in range(4):
        slot = f"0001:0{n}:00.0"
        _netdev(tmp_path, f"hsn{n}", pci=slot, driver="cxi_ss1", state="down" if n == 2 else "up")
        _cxi(tmp_path, n, slot, state="down" if n == 2 else "up", cassini=2 if n < 3 else 1)
    interfaces = sysfs.net_interfaces(str(tmp_path))
    fast = [i.name for i in interfaces if i.high_speed]
    assert fast == ["hsn0", "hsn1", "hsn2", "hsn3"]
    hsn0 = next(i for i in interfaces if i.name == "hsn0")
    assert (hsn0.driver, hsn0.pci_slot, hsn0.speed_mbps, hsn0.mtu) == (
        "cxi_ss1",
        "0001:00:00.0",
        200000,
        9000,
    )
    lo = next(i for i in interfaces if i.name == "lo")
    assert lo.kind == "loopback" and not lo.high_speed and lo.speed_mbps is None

    devs = sysfs.cxi_devices(str(tmp_path), interfaces)
    assert [d.name for d in devs] == ["cxi0", "cxi1", "cxi2", "cxi3"]
    assert [d.netdev for d in devs] == ["hsn0", "hsn1", "hsn2", "hsn3"]
    assert [d.link_state for d in devs] == ["up", "up", "down", "up"]
    assert devs[3].media == "AOC" and devs[0].media == "electrical"  # Cassini 1 vs 2 layout
    assert devs[1].numa_node == 1 and devs[0].dev_node == "/dev/cxi0"
    assert [sysfs.link_is_up(d.link_state) for d in devs] == [True, True, False, True]


def test_dev_node_without_sysfs_and_sysfs_without_dev_node(tmp_path):
    _write(tmp_path / "dev/cxi1", "")  # a container that got the device but not the class dir
    _cxi(tmp_path, 0, "0001:00:00.0", dev_node=False)
    devs = sysfs.cxi_devices(str(tmp_path))
    assert [(d.name, d.dev_node, d.link_state) for d in devs] == [
        ("cxi0", None, "up"),
        ("cxi1", "/dev/cxi1", None),
    ]


def test_infiniband_ports(tmp_path):
    port = tmp_path / "sys/class/infiniband/mlx5_0/ports/1"
    _write(port / "state", "4: ACTIVE")
    _write(port / "rate", "200 Gb/sec (4X HDR)")
    _write(port / "link_layer", "InfiniBand")
    _netdev(tmp_path, "ib0", arphrd=32, speed="200000")
    assert sysfs.ib_ports(str(tmp_path)) == [
        sysfs.IbPort("mlx5_0", 1, "4: ACTIVE", "200 Gb/sec (4X HDR)", "InfiniBand")
    ]
    assert sysfs.link_is_up("4: ACTIVE") and sysfs.link_is_up("1: DOWN") is False
    ib0 = sysfs.net_interfaces(str(tmp_path))[0]
    assert ib0.kind == "infiniband" and ib0.high_speed


def test_this_machine_matches_the_kernel():
    names = sorted(os.listdir("/sys/class/net"))
    interfaces = sysfs.net_interfaces()
    assert sorted(i.name for i in interfaces) == names
    for i in interfaces:
        with open(f"/sys/class/net/{i.name}/mtu") as f:
            assert i.mtu == int(f.read())
    assert sysfs.cxi_devices() == []  # no Slingshot here; the real-device path is the fake tree above
