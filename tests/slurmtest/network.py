"""The cluster's network: names of its namespaces and links, building them, finding ours.

Each cluster has one bridge on this machine holding the gateway address, and per host (ctl and
every node) a network namespace joined to the bridge by a veth pair, on 10.213.<k>.0/24.
"""

from __future__ import annotations

from pathlib import Path

from .commands import run

PREFIX = "cdslm"  # netns "cdslm-<id>-<host>", links "cdslm<id>br" / "cdslm<id>v<k>"
NETNS_DIR = Path("/run/netns")
SUBNET = "10.213"  # 10.213.<k>.0/24, only ever on our bridges and inside our namespaces
CTL_HOST = "ctl"
NODE_IFACE = "eth0"  # the veth end inside every namespace has this name (GLOO_SOCKET_IFNAME)


def netns_name(cluster_id: str, host: str) -> str:
    return f"{PREFIX}-{cluster_id}-{host}"


def bridge_name(cluster_id: str) -> str:
    return f"{PREFIX}{cluster_id}br"


def veth_name(cluster_id: str, i: int) -> str:
    return f"{PREFIX}{cluster_id}v{i}"


def make_network(cluster_id: str, gateway_addr: str, hosts: dict[str, str]) -> None:
    """The bridge with `gateway_addr`, then one namespace per host (name -> address)."""
    bridge = bridge_name(cluster_id)
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{gateway_addr}/24", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    for i, (host, addr) in enumerate(hosts.items()):
        ns, veth = netns_name(cluster_id, host), veth_name(cluster_id, i)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", NODE_IFACE, "netns", ns])
        run(["ip", "link", "set", veth, "master", bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", NODE_IFACE])
        run(["ip", "-n", ns, "link", "set", NODE_IFACE, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # no default route: only the cluster's own subnet is reachable from inside


def our_netns() -> list[str]:
    """Every cordee test-cluster namespace on this machine, whoever made it."""
    return [n.name for n in NETNS_DIR.glob(f"{PREFIX}-*")] if NETNS_DIR.is_dir() else []


def our_links() -> list[str]:
    """Every cordee test-cluster bridge and veth on this machine, whoever made it."""
    p = run(["ip", "-o", "link", "show"], check=False)
    names = [line.split(":")[1].strip().split("@")[0] for line in p.stdout.splitlines() if ":" in line]
    return [n for n in names if n.startswith(PREFIX)]
