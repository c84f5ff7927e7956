"""NICs as the kernel shows them: Slingshot CXI devices, high-speed network interfaces, InfiniBand.

Read from sysfs and /dev only (no library, no root), so it works in a container and on a login
node. `root` prefixes every path so tests can point it at a fake tree.

CXI layout, as HPE's cxi_stat reads it (shs-libcxi utils/cxi_stat.c): the PCI slot is
PCI_SLOT_NAME in /sys/class/cxi/cxiN/device/uevent; the port lives under device/port (Cassini 1:
files link, speed, media) or device/port/0 (Cassini 2: link/state, link/speed, media/type); the
Ethernet side of the NIC (hsnN) is the /sys/class/net entry whose device link ends in that slot.
"""

from __future__ import annotations

import os
from typing import NamedTuple

# ARPHRD_* from linux/if_arp.h, for /sys/class/net/X/type
_ARPHRD = {1: "ether", 32: "infiniband", 772: "loopback"}
# Interfaces at or above this speed count as high-speed even without a telling name or driver.
_FAST_MBPS = 100_000
_FAST_PREFIXES = ("hsn", "ib")


class CxiDevice(NamedTuple):
    name: str  # cxi0
    dev_node: str | None  # /dev/cxi0 when present
    pci_slot: str | None
    numa_node: int | None
    link_state: str | None  # "up" / "down" as the driver writes it; None where sysfs has no port
    link_speed: str | None  # e.g. "BS_200G"
    media: str | None
    netdev: str | None  # hsn0

    def as_dict(self) -> dict:
        return self._asdict()


class NetInterface(NamedTuple):
    name: str
    kind: str  # ether / infiniband / loopback / arphrd-N
    operstate: str | None
    speed_mbps: int | None  # None where the kernel has none (virtual or link down)
    mtu: int | None
    driver: str | None
    pci_slot: str | None
    high_speed: bool

    def as_dict(self) -> dict:
        return self._asdict()


class IbPort(NamedTuple):
    device: str  # mlx5_0
    port: int
    state: str | None  # "4: ACTIVE"
    rate: str | None  # "200 Gb/sec (4X HDR)"
    link_layer: str | None

    def as_dict(self) -> dict:
        return self._asdict()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:  # absent, or EINVAL (speed of a link that is down)
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _link_target_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _natural_key(name: str) -> tuple:
    digits = "".join(c for c in name if c.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else -1, name)


def net_interfaces(root: str = "/") -> list[NetInterface]:
    base = os.path.join(root, "sys/class/net")
    out = []
    for name in sorted(_listdir(base), key=_natural_key):
        d = os.path.join(base, name)
        arphrd = _read_int(os.path.join(d, "type"))
        kind = _ARPHRD.get(arphrd, f"arphrd-{arphrd}") if arphrd is not None else "unknown"
        speed = _read_int(os.path.join(d, "speed"))
        speed = speed if speed is not None and speed > 0 else None  # -1: unknown
        driver = _link_target_name(os.path.join(d, "device", "driver"))
        fast = kind == "infiniband" or name.startswith(_FAST_PREFIXES) or (speed or 0) >= _FAST_MBPS
        out.append(
            NetInterface(
                name=name,
                kind=kind,
                operstate=_read(os.path.join(d, "operstate")),
                speed_mbps=speed,
                mtu=_read_int(os.path.join(d, "mtu")),
                driver=driver,
                pci_slot=_link_target_name(os.path.join(d, "device")),
                high_speed=fast and kind != "loopback",
            )
        )
    return out


def _uevent_value(path: str, key: str) -> str | None:
    text = _read(path) or ""
    for line in text.splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1 :]
    return None


def _cxi_port(device_dir: str) -> tuple[str | None, str | None, str | None]:
    """(state, speed, media) for Cassini 2 (port/0/...) or Cassini 1 (port/...)."""
    c2 = os.path.join(device_dir, "port", "0")
    if os.path.isdir(c2):
        return (
            _read(os.path.join(c2, "link", "state")),
            _read(os.path.join(c2, "link", "speed")),
            _read(os.path.join(c2, "media", "type")),
        )
    c1 = os.path.join(device_dir, "port")
    return (
        _read(os.path.join(c1, "link")),
        _read(os.path.join(c1, "speed")),
        _read(os.path.join(c1, "media")),
    )


def cxi_devices(root: str = "/", interfaces: list[NetInterface] | None = None) -> list[CxiDevice]:
    """Every CXI device seen either in /sys/class/cxi or as a /dev/cxiN node."""
    sys_base = os.path.join(root, "sys/class/cxi")
    dev_base = os.path.join(root, "dev")
    names = set(_listdir(sys_base))
    names |= {n for n in _listdir(dev_base) if n.startswith("cxi") and n[3:].isdigit()}
    if interfaces is None:
        interfaces = net_interfaces(root)
    by_slot = {i.pci_slot: i.name for i in interfaces if i.pci_slot}
    out = []
    for name in sorted(names, key=_natural_key):
        device_dir = os.path.join(sys_base, name, "device")
        slot = _uevent_value(os.path.join(device_dir, "uevent"), "PCI_SLOT_NAME")
        state, speed, media = _cxi_port(device_dir)
        node = os.path.join(dev_base, name)
        numa = _read_int(os.path.join(device_dir, "numa_node"))
        out.append(
            CxiDevice(
                name=name,
                dev_node=f"/dev/{name}" if os.path.exists(node) else None,
                pci_slot=slot,
                numa_node=numa if numa is not None and numa >= 0 else None,
                link_state=state,
                link_speed=speed,
                media=media,
                netdev=by_slot.get(slot) if slot else None,
            )
        )
    return out


def ib_ports(root: str = "/") -> list[IbPort]:
    base = os.path.join(root, "sys/class/infiniband")
    out = []
    for dev in _listdir(base):
        ports_dir = os.path.join(base, dev, "ports")
        for port in _listdir(ports_dir):
            if not port.isdigit():
                continue
            p = os.path.join(ports_dir, port)
            out.append(
                IbPort(
                    device=dev,
                    port=int(port),
                    state=_read(os.path.join(p, "state")),
                    rate=_read(os.path.join(p, "rate")),
                    link_layer=_read(os.path.join(p, "link_layer")),
                )
            )
    return out


def link_is_up(state: str | None) -> bool | None:
    """CXI writes 'up'/'down'; InfiniBand '4: ACTIVE'; net operstate 'up'. None: unknown."""
    if state is None:
        return None
    s = state.strip().lower()
    if s in ("up", "4: active", "active"):
        return True
    if s in ("unknown", ""):
        return None
    return False
