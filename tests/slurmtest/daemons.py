"""Starting a daemon inside a host's namespaces, and the reaper that each slurmd runs under."""

from __future__ import annotations

import subprocess
from pathlib import Path

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


def spawn(netns: Path, state_dir: Path, host: str, argv: list[str], out) -> subprocess.Popen:
    """Start `argv` inside the network namespace `netns`, with private mounts and hostname
    (`host`): the hosts and resolv.conf files of `state_dir` are bind-mounted over /etc's.
    Output goes to the open file `out`."""
    script = (
        'mount --bind "$1/hosts" /etc/hosts && mount --bind "$1/resolv.conf" /etc/resolv.conf'
        ' && hostname "$2" && shift 2 && exec "$@"'
    )
    full = ["nsenter", f"--net={netns}", "unshare", "--mount", "--uts", "--propagation", "private"]
    full += ["/bin/sh", "-c", script, "sh", str(state_dir), host, *argv]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return subprocess.Popen(
        full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        start_new_session=True, cwd=state_dir,
    )  # fmt: skip
