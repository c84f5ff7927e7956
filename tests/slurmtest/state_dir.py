"""The cluster's state directory: slurm.conf, munge key, hosts and resolv.conf for the
namespaces, and the spool, log and run directories the daemons write to."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .network import CTL_HOST, PREFIX


def write_state_dir(
    d: Path, cluster_id: str, cpus_per_node: int, gateway_addr: str, ctl_addr: str,
    node_addrs: dict[str, str],
) -> None:  # fmt: skip
    for sub in ("log", "ctld", "run", "munge-etc", "munge-run", "munge-lib"):
        (d / sub).mkdir()
    for n in node_addrs:
        (d / "spool" / n).mkdir(parents=True)
        (d / "tmp" / n).mkdir(parents=True)
    os.chmod(d, 0o755)
    os.chmod(d / "munge-etc", 0o700)
    os.chmod(d / "munge-run", 0o755)
    os.chmod(d / "munge-lib", 0o700)
    key = d / "munge-etc" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    hosts = [f"{gateway_addr}\tcordee-slurm-gateway", f"{ctl_addr}\t{CTL_HOST}"]
    hosts += [f"{a}\t{n}" for n, a in node_addrs.items()]
    # IPv4-mapped forms too: dual-stack servers (torch's TCPStore) see peers as ::ffff:a.b.c.d
    hosts += [f"::ffff:{a}\t{n}" for n, a in node_addrs.items()]
    (d / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n" + "\n".join(hosts) + "\n")
    # No nameserver: lookups of unknown names (e.g. torch's reverse lookup of IPv4-mapped
    # peer addresses) fail at once instead of timing out on the host's unreachable DNS.
    (d / "resolv.conf").write_text("# cordee test cluster: no DNS, names are in /etc/hosts\n")
    (d / "plugstack.conf").write_text("")  # not the system's /etc/slurm/plugstack.conf
    c = cpus_per_node
    nodes = "\n".join(
        f"NodeName={n} NodeAddr={a} CPUs={c} Boards=1 SocketsPerBoard=1 CoresPerSocket={c} "
        f"ThreadsPerCore=1 RealMemory=1024 State=UNKNOWN"
        for n, a in node_addrs.items()
    )
    (d / "slurm.conf").write_text(f"""\
# cordee test cluster {cluster_id} (tests/slurmtest)
ClusterName={PREFIX}{cluster_id}
SlurmctldHost={CTL_HOST}({ctl_addr})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge-run/munge.socket.2
StateSaveLocation={d}/ctld
SlurmdSpoolDir={d}/spool/%n
TmpFS={d}/tmp/%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
KillWait=2
MinJobAge=10
MessageTimeout=10
SlurmdTimeout=120
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
