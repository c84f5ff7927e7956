"""`make demo`: the whole flow on a real four-node Slurm cluster on this machine, then inside the
cpu-ci container image.

1. Starts the test cluster (munged, slurmctld, four slurmd "nodes" in their own network
   namespaces) and runs `srun -N2 --ntasks-per-node=2 cordee launch -- python -c <gloo all_reduce>`,
   printing what each rank saw as a table.
2. The standard preflight across all four nodes (tests/demo_preflight.py): healthy, then with one
   node's link slowed by traffic control; prints the table and the bad-node hostlist.
3. A chained training run through sbatch (tests/demo_train.py): `cordee job render` script, stopped
   by its time limit, resumed by its successor; prints the jobs and the metrics.
4. Fine-tuning (tests/demo_finetune.py): a tiny Llama built by transformers, chat data with loss
   masks, two nodes fine-tuning it from its safetensors, `cordee export`, transformers loading the
   export with cordee's logits.
5. Storage (tests/demo_storage.py): 20,000 small files packed into a squashfs image twice (identical
   bytes), verified, a flipped byte caught; `cordee io bench --quick` with the tree-against-squashfs
   read ratio; `cordee ckpt interval` for an example job.
6. Stops the cluster, builds the cpu-ci image (`cordee image build cpu-ci`: debootstrap base,
   podman, squashfs, EDF in $EDF_PATH; cached after the first time) and runs
   `cordee edf run cpu-ci -- cordee launch --nproc-per-node 2 -- python -c <gloo all_reduce>`.
Exit status 0 only if every step did what it should; 2 if the cluster could not start, the image
could not be built or a step failed; 1 if a step gave a wrong answer.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_finetune import finetune_step  # noqa: E402
from demo_preflight import preflight_step  # noqa: E402
from demo_storage import storage_step  # noqa: E402
from demo_train import train_step  # noqa: E402
from slurmtest import ClusterError, SlurmCluster, unavailable_reason  # noqa: E402

CLUSTER_NODES = 4  # the preflight pairs nodes to isolate a bad one
NODES, TASKS_PER_NODE = 2, 2  # the all_reduce step

ALL_REDUCE = """
import datetime, json, os, socket
import torch
import torch.distributed as dist
dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=60))
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
host = socket.gethostname()
line = json.dumps({"rank": dist.get_rank(), "world": dist.get_world_size(),
                   "local_rank": os.environ["LOCAL_RANK"], "node_rank": os.environ["NODE_RANK"],
                   "node": host, "addr": socket.gethostbyname(host),
                   "master": os.environ["MASTER_ADDR"] + ":" + os.environ["MASTER_PORT"],
                   "sum": t.item()})
# one write per line: the local ranks share stdout, and print() writes the newline separately
# when Python runs unbuffered (PYTHONUNBUFFERED reaches the container with the host environment)
os.write(1, (line + "\\n").encode())
dist.destroy_process_group()
"""


def rank_rows(stdout: str) -> list[dict]:
    """One JSON object per rank line; a garbled line (ranks writing over each other) is reported,
    not a traceback, and makes the row count come up short."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                print(f"demo: unreadable rank line: {line[:200]}", file=sys.stderr)
    return rows


COLUMNS = [
    ("rank", "rank"),
    ("local_rank", "local"),
    ("node_rank", "node#"),
    ("node", "node"),
    ("addr", "node address"),
    ("master", "master addr:port"),
    ("sum", "all_reduce"),
]


def table(rows: list[dict]) -> str:
    cells = [[h for _, h in COLUMNS]] + [[str(r.get(k, "?")) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check(rows: list[dict], nodes: int = NODES, tasks_per_node: int = TASKS_PER_NODE) -> list[str]:
    world = nodes * tasks_per_node
    expected = world * (world + 1) / 2
    problems = []
    if sorted(r["rank"] for r in rows) != list(range(world)):
        problems.append(f"expected ranks 0..{world - 1} once each, got {sorted(r['rank'] for r in rows)}")
    problems += [
        f"rank {r['rank']}: all_reduce gave {r['sum']}, expected {expected}"
        for r in rows
        if r["sum"] != expected
    ]
    if len({r["master"] for r in rows}) != 1:
        problems.append(f"ranks disagree on the master: {sorted({r['master'] for r in rows})}")
    if len({r["node"] for r in rows}) != nodes:
        problems.append(f"expected ranks on {nodes} nodes, got {sorted({r['node'] for r in rows})}")
    return problems


def container_step() -> int:
    """Build cpu-ci (a cache hit after the first time) and run the all_reduce in it, 2 local ranks."""
    cordee = str(Path(sys.executable).with_name("cordee"))
    print("\n== cordee image build cpu-ci  (first time: debootstrap + podman build, ~2-4 min; then cached)")
    try:
        build = subprocess.run(
            [cordee, "image", "build", "cpu-ci", "--json"], stdout=subprocess.PIPE, text=True, timeout=3600
        )
        if build.returncode != 0:
            print(
                f"demo: building cpu-ci failed (exit {build.returncode}); see its error above",
                file=sys.stderr,
            )
            return 2
        summary = json.loads(build.stdout)
        state = "cache hit" if summary["cache_hit"] else f"built in {summary['seconds']:.0f}s"
        print(f"{summary['tag']}: {state}; {summary['sqsh']} ({summary['sqsh_bytes'] / 2**20:.0f} MiB)")
        args = [
            "edf",
            "run",
            "cpu-ci",
            "--",
            "cordee",
            "launch",
            "--nproc-per-node",
            "2",
            "--",
            "python",
            "-c",
        ]
        print(f"\n== cordee {shlex.join(args)} '<gloo all_reduce>'")
        t0 = time.monotonic()
        cp = subprocess.run([cordee, *args, ALL_REDUCE], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        print(f"demo: {e.cmd[1:3]} did not finish within {e.timeout:.0f}s", file=sys.stderr)
        return 2
    rows = sorted(rank_rows(cp.stdout), key=lambda r: r["rank"])
    if rows:
        print(table(rows))
    if cp.returncode != 0 or not rows:
        print(
            f"\ndemo: the container step failed (exit {cp.returncode}); stderr:\n{cp.stderr}", file=sys.stderr
        )
        return 2
    problems = check(rows, nodes=1, tasks_per_node=2)
    for p in problems:
        print(f"demo: WRONG (container): {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"\n2 ranks in the cpu-ci container, step took {time.monotonic() - t0:.1f}s: both got the sum 3")
    return 0


def main() -> int:
    reason = unavailable_reason()
    if reason:
        print(f"demo: cannot start the Slurm test cluster: {reason}", file=sys.stderr)
        return 2
    print(
        f"== starting a Slurm test cluster: munged, slurmctld, {CLUSTER_NODES} slurmd in network namespaces"
    )
    try:
        with SlurmCluster(nodes=CLUSTER_NODES, verbose=True) as cluster:
            print(cluster.run(["sinfo", "-N", "-o", "%N %T %c %P"]).stdout.rstrip())
            args = [
                f"-N{NODES}",
                f"--ntasks-per-node={TASKS_PER_NODE}",
                "--kill-on-bad-exit=1",
                "cordee",
                "launch",
                "--",
                "python",
                "-c",
                "<gloo all_reduce>",
            ]
            print(f"\n== srun {shlex.join(args)}")
            t0 = time.monotonic()
            cp = cluster.srun([*args[:-1], ALL_REDUCE], timeout=180)
            elapsed = time.monotonic() - t0
            rows = rank_rows(cp.stdout)
            rows.sort(key=lambda r: r["rank"])
            if rows:
                print(table(rows))
            if cp.returncode != 0 or not rows:
                print(
                    f"\ndemo: the step failed (srun exit {cp.returncode}); its stderr:\n{cp.stderr}",
                    file=sys.stderr,
                )
                return 2
            problems = check(rows)
            print(f"\n{len(rows)} ranks on {NODES} nodes, step took {elapsed:.1f}s")
            if not problems:
                problems += preflight_step(cluster)
            if not problems:
                problems += train_step(cluster)
            if not problems:
                problems += finetune_step(cluster)
            print("== stopping the cluster")
        print("== cluster stopped")
    except subprocess.TimeoutExpired as e:
        print(f"demo: the step did not finish within {e.timeout:.0f}s; stderr:\n{e.stderr}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"demo: the Slurm test cluster did not start:\n{e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"demo: WRONG: {p}", file=sys.stderr)
    if problems:
        return 1
    world = NODES * TASKS_PER_NODE
    total = world * (world + 1) // 2
    print(f"demo: Slurm steps OK: all {world} ranks got the sum {total}; the preflight passed healthy and")
    print(
        "demo: named exactly the slowed node; the chained training was stopped by its time limit and resumed"
    )
    print("demo: the fine-tuned tiny Llama's export loads in transformers with cordee's logits")
    problems = storage_step()
    for p in problems:
        print(f"demo: WRONG (storage): {p}", file=sys.stderr)
    if problems:
        return 1
    print("demo: storage OK: the dataset image is reproducible and verified, a flipped byte was caught")
    rc = container_step()
    if rc == 0:
        print("demo: OK: launch, preflight, chained training, fine-tuning; storage; all_reduce in cpu-ci")
    return rc


if __name__ == "__main__":
    sys.exit(main())
