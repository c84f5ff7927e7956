"""`SlurmCluster`: one test cluster's network, files and daemons, and its readiness checks."""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .commands import CMD_TIMEOUT, ClusterError, client_env, run, unavailable_reason
from .daemons import REAPER, spawn
from .network import CTL_HOST, NETNS_DIR, SUBNET, bridge_name, make_network, netns_name, our_netns, veth_name
from .processes import pids_in_netns, start_time
from .registry import cleanup_stale, locked, records, teardown, write_record
from .state_dir import write_state_dir


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"--- {path}: (missing)"
    return f"--- {path} (last {len(text)} lines):\n" + "\n".join(text)


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
        run(["scancel", f"--user={getpass.getuser()}"], check=False, env=self.env)

    def node_processes(self) -> list[tuple[str, int, str]]:
        """(node, pid, command line) of every process on the nodes except slurmd itself."""
        daemons = {p.pid for p in self._procs.values()}
        out = []
        for pid, ns in pids_in_netns([self._netns(n) for n in self.node_names]).items():
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
            make_network(self.id, self.gateway_addr, {CTL_HOST: self.ctl_addr, **self.node_addrs})
            write_state_dir(
                self.state_dir, self.id, self.cpus_per_node, self.gateway_addr, self.ctl_addr, self.node_addrs
            )
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
        with locked():
            teardown(rec, reap=lambda: [p.poll() for p in self._procs.values()])
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
        return netns_name(self.id, host)

    def _log(self, name: str) -> Path:
        return self.state_dir / "log" / f"{name}.log"

    def _out(self, name: str) -> Path:
        return self.state_dir / "log" / f"{name}.out"

    def _allocate(self) -> None:
        with locked():
            for cid in cleanup_stale():
                self._say(f"removed stale cluster {cid}")
            recs = records()
            used_ids = {r["id"] for r in recs} | {n.split("-")[1] for n in our_netns()}
            used_k = {r["subnet"] for r in recs}
            addrs = run(["ip", "-4", "-o", "addr", "show"]).stdout
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
                "owner_pid": os.getpid(), "owner_start": start_time(os.getpid()),
                "detached": self.detached, "keep_state": self.keep_state,
                "netns": [self._netns(h) for h in hosts],
                "links": [veth_name(self.id, i) for i in range(len(hosts))] + [bridge_name(self.id)],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }  # fmt: skip
            write_record(self._rec)
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

    def _spawn(self, name: str, host: str, argv: list[str]) -> None:
        """Start `argv` inside host's network namespace, with private mounts and hostname."""
        with open(self._out(name), "wb") as out:
            self._procs[name] = spawn(NETNS_DIR / self._netns(host), self.state_dir, host, argv, out)

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
        self.env = client_env(self.conf_path)
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
