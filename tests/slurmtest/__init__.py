"""A real multi-node Slurm cluster on one machine, for tests and the demo.

`munged` and `slurmctld` run in a namespace of their own ("ctl"), and each `slurmd` "node" in
its own network + mount + UTS namespace, with its own hostname and a private address on a bridge
that exists only on this machine (10.213.<k>.0/24, one /24 per cluster). The test process (root
namespace) holds the bridge address, so `srun`, `sinfo` and `scontrol` reach slurmctld and the
nodes' I/O connections reach `srun`. All files (slurm.conf, munge key, spools, logs, the hosts
file bind-mounted over /etc/hosts in each namespace) live in one temporary directory.

Each namespace also gets a resolv.conf without nameservers and no default route: processes in
it can reach the cluster's addresses only, and unknown names fail at once instead of timing out.

Teardown is by PID: Slurm clients still talking to the cluster (an orphaned srun would wait
forever) get SIGKILL; every process whose network namespace is one of the cluster's (daemons,
slurmstepd, leftover tasks) gets SIGTERM, then SIGKILL after a grace period; then the
namespaces, veths, bridge and the state directory are removed. Each cluster is recorded in
/run/cordee-slurm/<id>.json with its owner's PID; a cluster whose owner died (a crashed run) is
torn down by the next start.

    with SlurmCluster(nodes=2) as c:
        c.srun(["-N2", "hostname"], timeout=30)

Modules: `cluster` (SlurmCluster: start, clients, stop), `network` (namespaces, bridge, veths),
`state_dir` (slurm.conf, munge key, hosts), `daemons` (start in a namespace, slurmd's reaper),
`processes` (find by namespace, signal, kill), `registry` (/run/cordee-slurm records, teardown,
stale clusters), `commands` (needed tools, host commands, client environment), `__main__`.

Manual use, as root from the repo root: `PYTHONPATH=tests python -m slurmtest up|down|status`
(`up --foreground` runs until Ctrl-C; `down` removes detached and stale clusters).
"""

from .cluster import SlurmCluster
from .commands import ClusterError, unavailable_reason

__all__ = ["ClusterError", "SlurmCluster", "unavailable_reason"]
