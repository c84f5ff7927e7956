"""A real multi-node Slurm cluster on one machine, for tests and the demo.

The command line: `PYTHONPATH=tests python -m slurmtest up|down|status` (see the package).
"""

from __future__ import annotations

import argparse
import signal
import sys

from .cluster import SlurmCluster
from .commands import ClusterError, unavailable_reason
from .network import SUBNET
from .processes import pids_in_netns
from .registry import cleanup_stale, locked, owner_alive, records


def _status() -> int:
    recs = records()
    if not recs:
        print("no cordee test clusters on this machine")
    for r in recs:
        owner = "detached" if r.get("detached") else f"pid {r['owner_pid']}"
        state = "live" if owner_alive(r) else "STALE (owner gone)"
        procs = len(pids_in_netns(r["netns"]))
        print(
            f"{r['id']}: {state}, {owner}, {procs} processes, net {SUBNET}.{r['subnet']}.0/24, "
            f"created {r['created']}\n  SLURM_CONF={r['state_dir']}/slurm.conf"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m slurmtest", description=__doc__.split("\n\n")[0])
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
        with locked():
            removed = cleanup_stale(include_detached=True)
        print(f"removed: {', '.join(removed) or 'nothing'}")
        return 0
    reason = unavailable_reason()
    if reason:
        print(f"slurmtest: {reason}", file=sys.stderr)
        return 2
    c = SlurmCluster(args.nodes, args.cpus_per_node, detached=not args.foreground, verbose=True)
    try:
        c.start()
    except ClusterError as e:
        print(f"slurmtest: {e}", file=sys.stderr)
        return 2
    print(f"export SLURM_CONF={c.conf_path}\nexport PATH={c.env['PATH']}")
    if args.foreground:
        try:
            print("running; Ctrl-C to stop", flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
