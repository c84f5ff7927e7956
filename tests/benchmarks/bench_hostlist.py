"""Hostlists of a 10,000-node machine: cordee's expand/compress against python-hostlist and Slurm.

The machine: 8 cabinets of 1300 slots, nid000001-nid010400, with seeded gaps (missing blades of 4 and
single drained nodes) down to exactly 10,000 nodes. In-process times are the median over repeats;
the whole-command times (cordee CLI vs the real `scontrol`) come from common.time_command, and their
ratio is taken in the same run. Results are checked against scontrol before anything is timed.
"""

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import hostlist as pyhostlist
from common import print_table, time_command, write_result

from cordee.launch.hostlist import compress, expand

NODES, CABINETS, SLOTS, REPEATS = 10_000, 8, 1300, 30
SCONTROL = "/usr/bin/scontrol"
cordee = str(Path(sys.executable).with_name("cordee"))


def machine_hosts() -> list[str]:
    rnd = random.Random(10_000)
    present = set(range(1, CABINETS * SLOTS + 1))
    while len(present) > NODES + 40:  # missing blades of 4
        start = rnd.randrange(1, CABINETS * SLOTS, 4)
        present -= set(range(start, start + 4))
    while len(present) > NODES:  # single drained nodes
        present.discard(rnd.choice(sorted(present)))
    return [f"nid{n:06d}" for n in sorted(present)]


def time_call(fn, arg, repeats: int = REPEATS, warmup: int = 3) -> dict:
    samples = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn(arg)
        if i >= warmup:
            samples.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "repeats": repeats}


hosts = machine_hosts()
expr = compress(hosts)
tmp = Path(tempfile.mkdtemp(prefix="cordee-bench-hostlist-"))
(tmp / "slurm.conf").write_text("ClusterName=cordee-bench\nSlurmctldHost=no-controller.invalid\n")
hosts_file = tmp / "hosts.txt"
hosts_file.write_text("\n".join(hosts) + "\n")
env = {**os.environ, "SLURM_CONF": str(tmp / "slurm.conf")}
have_scontrol = os.access(SCONTROL, os.X_OK)


def scontrol(*args: str) -> str:
    return subprocess.run([SCONTROL, *args], env=env, capture_output=True, text=True, timeout=60).stdout


assert len(hosts) == NODES and expand(expr) == hosts
agrees = {}
if have_scontrol:
    agrees["expand"] = scontrol("show", "hostnames", expr).split() == hosts
    agrees["compress"] = scontrol("show", "hostlist", str(hosts_file)).strip() == expr
    if not all(agrees.values()):
        sys.exit(f"cordee disagrees with scontrol on the 10,000-node list: {agrees}")

api = {
    "cordee expand": time_call(expand, expr),
    "cordee compress": time_call(compress, hosts),
    "python-hostlist expand_hostlist": time_call(
        lambda e: pyhostlist.expand_hostlist(e, allow_duplicates=True), expr
    ),
    "python-hostlist collect_hostlist": time_call(pyhostlist.collect_hostlist, hosts),
}
commands = {
    "cordee hostlist expand EXPR": [cordee, "hostlist", "expand", expr],
    "cordee hostlist compress HOST...": [cordee, "hostlist", "compress", *hosts],
}
if have_scontrol:
    commands["scontrol show hostnames EXPR"] = [SCONTROL, "show", "hostnames", expr]
    commands["scontrol show hostlist FILE"] = [SCONTROL, "show", "hostlist", str(hosts_file)]
cli = {name: time_command(argv, repeats=REPEATS, env=env) for name, argv in commands.items()}
ratios = {}
if have_scontrol:
    ratios["cordee expand CLI / scontrol hostnames"] = (
        cli["cordee hostlist expand EXPR"]["median_s"] / cli["scontrol show hostnames EXPR"]["median_s"]
    )
    ratios["cordee compress CLI / scontrol hostlist"] = (
        cli["cordee hostlist compress HOST..."]["median_s"] / cli["scontrol show hostlist FILE"]["median_s"]
    )
    ratios["cordee expand API / scontrol hostnames (whole command)"] = (
        api["cordee expand"]["median_s"] / cli["scontrol show hostnames EXPR"]["median_s"]
    )

rows = [
    (k, "in-process", f"{v['median_s'] * 1e3:.2f} ms", f"{v['min_s'] * 1e3:.2f} ms") for k, v in api.items()
]
rows += [
    (k, "whole command", f"{v['median_s'] * 1e3:.2f} ms", f"{v['min_s'] * 1e3:.2f} ms")
    for k, v in cli.items()
]
print(f"expression ({len(expr)} characters): {expr[:100]}...")
print_table(f"{NODES}-node hostlist, median of {REPEATS}", rows, ("what", "how", "median", "min"))
if ratios:
    print_table("ratios (same run)", [(k, f"{v:.2f}x") for k, v in ratios.items()], ("ratio", "value"))
else:
    print("scontrol not installed: no comparison with Slurm")

slurm_version = scontrol("-V").strip() if have_scontrol else None
out = write_result(
    "hostlist",
    {
        "nodes": NODES,
        "expression": expr,
        "expression_chars": len(expr),
        "agrees_with_scontrol": agrees,
        "in_process": api,
        "whole_command": cli,
        "ratios": ratios,
    },
    {"python-hostlist": version("python-hostlist"), "slurm": slurm_version},
)
print(f"wrote {out}")
