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

Manual use: `python tests/slurm_cluster.py up|down|status`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import getpass
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PREFIX = "cdslm"  # netns "cdslm-<id>-<host>", links "cdslm<id>br" / "cdslm<id>v<k>"
REGISTRY = Path("/run/cordee-slurm")
NETNS_DIR = Path("/run/netns")
SUBNET = "10.213"  # 10.213.<k>.0/24, only ever on our bridges and inside our namespaces
CTL_HOST = "ctl"
NODE_IFACE = "eth0"  # the veth end inside every namespace has this name (GLOO_SOCKET_IFNAME)
CMD_TIMEOUT = 15.0
CLIENTS = {"srun", "salloc", "sbatch", "sattach", "scontrol", "sinfo", "squeue", "scancel", "sstat"}
GRACE = 5.0
TOOLS = ("munged", "slurmctld", "slurmd", "srun", "sinfo", "scontrol", "scancel", "nsenter", "unshare", "ip")
# Variables of an enclosing job or launcher that would leak into the test cluster's steps.
FOREIGN_PREFIXES = ("SLURM_", "SRUN_", "SALLOC_", "SBATCH_", "PMI_", "PMIX_", "TORCHELASTIC_")
FOREIGN_VARS = set(
    "RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE NODE_RANK GROUP_RANK MASTER_ADDR MASTER_PORT".split()
)
VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
# slurmd's parent in each node: a child subreaper that reaps the slurmstepd processes slurmd
# double-forks (under a PID 1 that reaps late or never, as in some VMs and containers, they
# would pile up as zombies). It passes SIGTERM/SIGINT on to slurmd and exits once it has no children left.
REAPER = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
main = os.fork()
if main == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda n, f: os.kill(main, n))
rc = 1
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        sys.exit(rc)
    if pid == main:
        rc = os.waitstatus_to_exitcode(status)
        rc = rc if rc >= 0 else 128 - rc
"""


class ClusterError(RuntimeError):
    """The cluster could not be started (the message carries the relevant daemon log tail)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None if it can."""
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (network namespaces, slurmd)"
    missing = [t for t in TOOLS if shutil.which(t, path=_sbin_path()) is None]
    if missing:
        return f"missing {', '.join(missing)}: run scripts/install-system-deps.sh"
    return None


def _sbin_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin"


def _run(argv: list[str], timeout: float = CMD_TIMEOUT, check: bool = True, env=None):
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(argv)}: no answer after {timeout}s") from e
    if check and p.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- {path} (last {len(text)} lines):\n" + "\n".join(text)


# ---- processes, found by network namespace -------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pids_in_netns(netns: list[str]) -> dict[int, str]:
    """PID -> namespace name, for every process inside one of `netns`."""
    inodes = {}
    for name in netns:
        with contextlib.suppress(OSError):
            inodes[f"net:[{os.stat(NETNS_DIR / name).st_ino}]"] = name
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ns = os.readlink(f"/proc/{entry.name}/ns/net")
                if ns in inodes and _alive(int(entry.name)):
                    found[int(entry.name)] = inodes[ns]
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_reaper(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"PR_SET_CHILD_SUBREAPER" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def _signal_and_wait(pids: list[int], sig: int, wait: float, reap) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while True:
        reap()
        pids = [p for p in pids if _alive(p)]
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def _kill(pids: list[int], grace: float, reap=lambda: None) -> None:
    """SIGTERM each PID, SIGKILL those still alive after `grace` seconds. slurmstepd ignores
    SIGTERM (and slurmd waits for it), so it gets SIGKILL after one second; munged goes last
    (the Slurm daemons still authenticate while shutting down), and reapers after it, to reap
    what the SIGKILLs leave behind."""
    kinds = {p: "reaper" if _is_reaper(p) else _comm(p) for p in pids}
    stepds = [p for p in pids if kinds[p] == "slurmstepd"]
    others = [p for p in pids if kinds[p] not in ("slurmstepd", "munged", "reaper")]
    t0 = time.monotonic()
    _signal_and_wait(others, signal.SIGTERM, 0, reap)
    _signal_and_wait(_signal_and_wait(stepds, signal.SIGTERM, min(1.0, grace), reap), signal.SIGKILL, 3, reap)
    left = _signal_and_wait(others, 0, max(0.0, grace - (time.monotonic() - t0)), reap)
    _signal_and_wait(left, signal.SIGKILL, 3.0, reap)
    for kind in ("munged", "reaper"):
        group = [p for p in pids if kinds[p] == kind]
        _signal_and_wait(_signal_and_wait(group, signal.SIGTERM, 2.0, reap), signal.SIGKILL, 3.0, reap)


# ---- registry of clusters on this machine --------------------------------------------------------


@contextlib.contextmanager
def _locked():
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with open(REGISTRY / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _records() -> list[dict]:
    out = []
    for path in sorted(REGISTRY.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out


def _write_record(rec: dict) -> None:
    tmp = REGISTRY / f".{rec['id']}.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.rename(REGISTRY / f"{rec['id']}.json")


def _owner_alive(rec: dict) -> bool:
    if rec.get("detached"):
        return True
    return _alive(rec["owner_pid"]) and _start_time(rec["owner_pid"]) == rec["owner_start"]


def _our_netns() -> list[str]:
    return [n.name for n in NETNS_DIR.glob(f"{PREFIX}-*")] if NETNS_DIR.is_dir() else []


def _our_links() -> list[str]:
    p = _run(["ip", "-o", "link", "show"], check=False)
    names = [line.split(":")[1].strip().split("@")[0] for line in p.stdout.splitlines() if ":" in line]
    return [n for n in names if n.startswith(PREFIX)]


def _clients_of(conf: str) -> list[int]:
    """srun/salloc/sbatch... processes (any namespace) that talk to the cluster of `conf`: they
    would wait forever for a controller that is gone."""
    needle = f"\0SLURM_CONF={conf}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if (
                    _comm(int(entry.name)) in CLIENTS
                    and needle in b"\0" + Path(f"/proc/{entry.name}/environ").read_bytes()
                ):
                    found.append(int(entry.name))
    return found


def _teardown(rec: dict, grace: float = GRACE, reap=lambda: None) -> None:
    """Kill every process of the cluster and its clients, remove its namespaces, links, files."""
    if rec.get("state_dir"):
        _signal_and_wait(_clients_of(f"{rec['state_dir']}/slurm.conf"), signal.SIGKILL, 3.0, reap)
    _kill(list(_pids_in_netns(rec["netns"])), grace, reap)
    for name in rec["netns"]:
        if (NETNS_DIR / name).exists():
            _run(["ip", "netns", "delete", name], check=False)
    for link in rec["links"]:
        _run(["ip", "link", "delete", link], check=False)
    if rec.get("state_dir") and not rec.get("keep_state"):
        shutil.rmtree(rec["state_dir"], ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (REGISTRY / f"{rec['id']}.json").unlink()


def cleanup_stale(include_detached: bool = False) -> list[str]:
    """Tear down clusters whose owner process is gone, and namespaces/links nobody owns.
    Call with the registry lock held. Returns the ids removed."""
    removed, known = [], set()
    for rec in _records():
        if _owner_alive(rec) and not (include_detached and rec.get("detached")):
            known.add(rec["id"])
            continue
        _teardown(rec, grace=1.0)
        removed.append(rec["id"])
    orphans = [n for n in _our_netns() if n.split("-")[1] not in known]
    links = [n for n in _our_links() if n[len(PREFIX) : len(PREFIX) + 4] not in known]
    if orphans or links:
        _teardown({"id": "orphans", "netns": orphans, "links": links}, grace=1.0)
        removed.append("orphans")
    return removed


# ---- the cluster ---------------------------------------------------------------------------------


class SlurmCluster:
    """munged + slurmctld + `nodes` slurmd, each slurmd in its own network namespace."""

    def __init__(
        self, nodes: int = 2, cpus_per_node: int = 4, *, node_prefix: str = "nid",
        start_timeout: float = 60.0, keep_state: bool = False, detached: bool = False,
        verbose: bool = False,
    ):  # fmt: skip
        if not 1 <= nodes <= 200:
            raise ValueError(f"nodes must be 1..200, got {nodes}")
        self.nodes, self.cpus_per_node = nodes, cpus_per_node
        self.node_names = [f"{node_prefix}{i:03d}" for i in range(1, nodes + 1)]
        self.start_timeout, self.keep_state, self.detached = start_timeout, keep_state, detached
        self.verbose = verbose
        self.id = ""
        self.state_dir = Path()
        self.node_addrs: dict[str, str] = {}
        self.ctl_addr = self.gateway_addr = ""
        self.env: dict[str, str] = {}
        self.start_seconds = 0.0
        self._procs: dict[str, subprocess.Popen] = {}
        self._rec: dict | None = None
        self._old_sigterm = None

    # -- public API
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "slurm.conf"

    def srun(self, args: list[str], timeout: float, env: dict[str, str] | None = None):
        """Run `srun ARGS` with the cluster environment (plus `env`); text output captured.
        On timeout, srun is killed, the cluster's jobs are cancelled and TimeoutExpired raised."""
        argv = ["srun", *args]
        proc = subprocess.Popen(
            argv,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            self.cancel_all()
            raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
        except BaseException:  # interrupted: srun would outlive the cluster, waiting for it
            proc.kill()
            proc.wait(timeout=10)
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def run(self, argv: list[str], timeout: float = CMD_TIMEOUT):
        """Run a Slurm client command (sinfo, scontrol, squeue...) against this cluster."""
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def cancel_all(self) -> None:
        _run(["scancel", f"--user={getpass.getuser()}"], check=False, env=self.env)

    def node_processes(self) -> list[tuple[str, int, str]]:
        """(node, pid, command line) of every process on the nodes except slurmd itself."""
        daemons = {p.pid for p in self._procs.values()}
        out = []
        for pid, ns in _pids_in_netns([self._netns(n) for n in self.node_names]).items():
            with contextlib.suppress(OSError):
                if pid in daemons or Path(f"/proc/{pid}/comm").read_text().strip() == "slurmd":
                    continue
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                out.append((ns.rsplit("-", 1)[1], pid, cmd))
        return out

    def log_tails(self, names: list[str] | None = None, lines: int = 30) -> str:
        names = names or ["munged", "slurmctld", *self.node_names]
        return "\n".join(_tail(self._log(n), lines) + "\n" + _tail(self._out(n), 10) for n in names)

    # -- start / stop
    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        t0 = time.monotonic()
        try:
            self._allocate()
            self._install_sigterm()
            self._say(f"state in {self.state_dir}; network {SUBNET}.{self._k}.0/24")
            self._make_network()
            self._write_files()
            self._start_daemons()
            self._wait_idle(t0)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        self._say(f"cluster {self.id} up in {self.start_seconds:.1f}s: {', '.join(self.node_names)}")

    def stop(self) -> None:
        """Tear everything down (idempotent)."""
        if self._rec is None:
            return
        rec, self._rec = self._rec, None
        with _locked():
            _teardown(rec, reap=lambda: [p.poll() for p in self._procs.values()])
        for p in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
        self._procs.clear()
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- internals
    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[slurm-cluster] {msg}", flush=True)

    def _netns(self, host: str) -> str:
        return f"{PREFIX}-{self.id}-{host}"

    def _log(self, name: str) -> Path:
        return self.state_dir / "log" / f"{name}.log"

    def _out(self, name: str) -> Path:
        return self.state_dir / "log" / f"{name}.out"

    def _allocate(self) -> None:
        with _locked():
            for cid in cleanup_stale():
                self._say(f"removed stale cluster {cid}")
            recs = _records()
            used_ids = {r["id"] for r in recs} | {n.split("-")[1] for n in _our_netns()}
            used_k = {r["subnet"] for r in recs}
            addrs = _run(["ip", "-4", "-o", "addr", "show"]).stdout
            free = [k for k in range(1, 255) if k not in used_k and f" {SUBNET}.{k}." not in addrs]
            if not free:
                raise ClusterError(f"no free {SUBNET}.<k>.0/24 subnet for another test cluster")
            self._k = free[0]
            self.id = secrets.token_hex(2)
            while self.id in used_ids:
                self.id = secrets.token_hex(2)
            self.state_dir = Path(tempfile.mkdtemp(prefix=f"cordee-slurm-{self.id}-"))
            hosts = [CTL_HOST, *self.node_names]
            self._rec = {
                "id": self.id, "subnet": self._k, "state_dir": str(self.state_dir),
                "owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
                "detached": self.detached, "keep_state": self.keep_state,
                "netns": [self._netns(h) for h in hosts],
                "links": [f"{PREFIX}{self.id}v{i}" for i in range(len(hosts))] + [f"{PREFIX}{self.id}br"],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }  # fmt: skip
            _write_record(self._rec)
        if not self.detached:
            atexit.register(self.stop)
        net = f"{SUBNET}.{self._k}"
        self.gateway_addr, self.ctl_addr = f"{net}.1", f"{net}.2"
        self.node_addrs = {n: f"{net}.{10 + i}" for i, n in enumerate(self.node_names, 1)}

    def _install_sigterm(self) -> None:
        """A SIGTERM to the test run (CI timeout) unwinds through stop() instead of leaking."""
        if self.detached or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

            def on_term(signum, frame):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                raise KeyboardInterrupt("SIGTERM")

            self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    def _make_network(self) -> None:
        bridge = f"{PREFIX}{self.id}br"
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.gateway_addr}/24", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        hosts = {CTL_HOST: self.ctl_addr, **self.node_addrs}
        for i, (host, addr) in enumerate(hosts.items()):
            ns, veth = self._netns(host), f"{PREFIX}{self.id}v{i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", NODE_IFACE, "netns", ns])
            _run(["ip", "link", "set", veth, "master", bridge, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", NODE_IFACE])
            _run(["ip", "-n", ns, "link", "set", NODE_IFACE, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # no default route: only the cluster's own subnet is reachable from inside

    def _write_files(self) -> None:
        d = self.state_dir
        for sub in ("log", "ctld", "run", "munge-etc", "munge-run", "munge-lib"):
            (d / sub).mkdir()
        for n in self.node_names:
            (d / "spool" / n).mkdir(parents=True)
            (d / "tmp" / n).mkdir(parents=True)
        os.chmod(d, 0o755)
        os.chmod(d / "munge-etc", 0o700)
        os.chmod(d / "munge-run", 0o755)
        os.chmod(d / "munge-lib", 0o700)
        key = d / "munge-etc" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        hosts = [f"{self.gateway_addr}\tcordee-slurm-gateway", f"{self.ctl_addr}\t{CTL_HOST}"]
        hosts += [f"{a}\t{n}" for n, a in self.node_addrs.items()]
        # IPv4-mapped forms too: dual-stack servers (torch's TCPStore) see peers as ::ffff:a.b.c.d
        hosts += [f"::ffff:{a}\t{n}" for n, a in self.node_addrs.items()]
        (d / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n" + "\n".join(hosts) + "\n"
        )
        # No nameserver: lookups of unknown names (e.g. torch's reverse lookup of IPv4-mapped
        # peer addresses) fail at once instead of timing out on the host's unreachable DNS.
        (d / "resolv.conf").write_text("# cordee test cluster: no DNS, names are in /etc/hosts\n")
        (d / "plugstack.conf").write_text("")  # not the system's /etc/slurm/plugstack.conf
        c = self.cpus_per_node
        nodes = "\n".join(
            f"NodeName={n} NodeAddr={a} CPUs={c} Boards=1 SocketsPerBoard=1 CoresPerSocket={c} "
            f"ThreadsPerCore=1 RealMemory=1024 State=UNKNOWN"
            for n, a in self.node_addrs.items()
        )
        self.conf_path.write_text(f"""\
# cordee test cluster {self.id} (tests/slurm_cluster.py)
ClusterName={PREFIX}{self.id}
SlurmctldHost={CTL_HOST}({self.ctl_addr})
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

    def _spawn(self, name: str, host: str, argv: list[str]) -> None:
        """Start `argv` inside host's network namespace, with private mounts and hostname."""
        script = (
            'mount --bind "$1/hosts" /etc/hosts && mount --bind "$1/resolv.conf" /etc/resolv.conf'
            ' && hostname "$2" && shift 2 && exec "$@"'
        )
        netns = f"--net={NETNS_DIR / self._netns(host)}"
        full = ["nsenter", netns, "unshare", "--mount", "--uts", "--propagation", "private"]
        full += ["/bin/sh", "-c", script, "sh", str(self.state_dir), host, *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        with open(self._out(name), "wb") as out:
            self._procs[name] = subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=self.state_dir,
            )  # fmt: skip

    def _check_alive(self) -> None:
        for name, p in self._procs.items():
            if p.poll() is not None:
                raise ClusterError(
                    f"{name} exited with {p.returncode} during start-up\n" + self.log_tails([name])
                )

    def _wait(self, what: str, ready, timeout: float, logs, detail=lambda: "") -> None:
        """Poll `ready()` until true; raise with the tails of `logs` (names, or a function giving
        them) if a daemon exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                names = logs() if callable(logs) else logs
                raise ClusterError(
                    f"{what} not ready after {timeout:.0f}s{detail()}\n" + self.log_tails(names)
                )
            time.sleep(0.1)

    def _start_daemons(self) -> None:
        d = self.state_dir
        sock = d / "munge-run" / "munge.socket.2"
        munged = ["munged", "--foreground", f"--socket={sock}", "--num-threads=4"]
        munged += [f"--key-file={d}/munge-etc/munge.key", f"--pid-file={d}/munge-run/munged.pid"]
        munged += [f"--log-file={self._log('munged')}", f"--seed-file={d}/munge-lib/munged.seed"]
        self._spawn("munged", CTL_HOST, munged)
        self._wait("munged", sock.exists, 15, ["munged"])
        self._say("munged up")
        self._spawn("slurmctld", CTL_HOST, ["slurmctld", "-D", "-c", "-i", "-f", str(self.conf_path)])
        self.env = self._client_env()
        self._wait("slurmctld", self._ctld_up, 20, ["slurmctld"])
        self._say("slurmctld up")
        for n in self.node_names:
            slurmd = ["slurmd", "-D", "-N", n, "-f", str(self.conf_path)]
            self._spawn(n, n, [sys.executable, "-I", "-S", "-c", REAPER, *slurmd])

    def _ctld_up(self) -> bool:
        try:
            return "is UP" in self.run(["scontrol", "ping"], timeout=10).stdout
        except subprocess.TimeoutExpired:
            return False

    def _client_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(FOREIGN_PREFIXES) and k not in FOREIGN_VARS
        }
        path = env.get("PATH", "/usr/bin:/bin").split(":")
        bindir = str(VENV_BIN if VENV_BIN.is_dir() else Path(sys.executable).parent)
        if bindir not in path:  # the nodes run the venv's python and `cordee`
            path.insert(0, bindir)
        env["PATH"] = ":".join(path)
        env["SLURM_CONF"] = str(self.conf_path)
        return env

    def node_states(self) -> dict[str, str]:
        try:
            p = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], timeout=10)
        except subprocess.TimeoutExpired:
            return {}
        return dict(line.split() for line in p.stdout.splitlines() if len(line.split()) == 2)

    def _wait_idle(self, t0: float) -> None:
        left = max(5.0, self.start_timeout - (time.monotonic() - t0))
        self._wait(
            f"nodes {','.join(self.node_names)}",
            lambda: all(self.node_states().get(n) == "idle" for n in self.node_names),
            left,
            lambda: ["slurmctld", *[n for n, st in self.node_states().items() if st != "idle"]],
            lambda: f" (sinfo: {self.node_states()})",
        )


# ---- manual use ----------------------------------------------------------------------------------


def _status() -> int:
    recs = _records()
    if not recs:
        print("no cordee test clusters on this machine")
    for r in recs:
        owner = "detached" if r.get("detached") else f"pid {r['owner_pid']}"
        state = "live" if _owner_alive(r) else "STALE (owner gone)"
        procs = len(_pids_in_netns(r["netns"]))
        print(
            f"{r['id']}: {state}, {owner}, {procs} processes, net {SUBNET}.{r['subnet']}.0/24, "
            f"created {r['created']}\n  SLURM_CONF={r['state_dir']}/slurm.conf"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster and leave it running (or wait with --foreground)")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--cpus-per-node", type=int, default=4)
    up.add_argument("--foreground", action="store_true", help="run until Ctrl-C, then tear down")
    sub.add_parser("down", help="tear down detached and stale clusters (live owned ones are kept)")
    sub.add_parser("status", help="list the test clusters on this machine")
    args = ap.parse_args(argv)
    if args.cmd == "status":
        return _status()
    if args.cmd == "down":
        with _locked():
            removed = cleanup_stale(include_detached=True)
        print(f"removed: {', '.join(removed) or 'nothing'}")
        return 0
    reason = unavailable_reason()
    if reason:
        print(f"slurm_cluster: {reason}", file=sys.stderr)
        return 2
    c = SlurmCluster(args.nodes, args.cpus_per_node, detached=not args.foreground, verbose=True)
    try:
        c.start()
    except ClusterError as e:
        print(f"slurm_cluster: {e}", file=sys.stderr)
        return 2
    print(f"export SLURM_CONF={c.conf_path}\nexport PATH={c.env['PATH']}")
    if args.foreground:
        try:
            print("running; Ctrl-C to stop", flush=True)
            signal.pause() if hasattr(signal, "pause") else time.sleep(1e9)
        except KeyboardInterrupt:
            pass
        finally:
            c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
