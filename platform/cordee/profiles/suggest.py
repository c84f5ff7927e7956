"""Which profile fits this machine when the user names none. Only `os`: it runs in every
`cordee env show` and `cordee launch`, where start-up time counts (bench_cli.py)."""

from __future__ import annotations

import os


def _has_entries(path: str) -> bool:
    try:
        return any(True for _ in os.scandir(path))
    except OSError:
        return False


def suggest(nnodes: int | None, root: str = "/") -> str:
    """The profile to use when the user names none.

    single-node for one node; otherwise by the hardware visible under `root`:
    Slingshot/CXI devices (/dev/cxi*, /sys/class/cxi) -> slingshot-cscs,
    /sys/class/infiniband entries -> infiniband, else ethernet-tcp.
    """
    if nnodes == 1:
        return "single-node"
    dev = os.path.join(root, "dev")
    try:
        cxi_dev = any(e.name.startswith("cxi") for e in os.scandir(dev))
    except OSError:
        cxi_dev = False
    if cxi_dev or _has_entries(os.path.join(root, "sys", "class", "cxi")):
        return "slingshot-cscs"
    if _has_entries(os.path.join(root, "sys", "class", "infiniband")):
        return "infiniband"
    return "ethernet-tcp"
