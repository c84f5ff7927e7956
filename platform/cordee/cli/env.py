"""`cordee env show [--json]` and `cordee env check` (env_check.py).

Kept light on purpose: this runs on login nodes and inside every task, so no torch, numpy or
NVML here (the benchmark bench_cli.py holds it under 5x `python -c pass`)."""

from __future__ import annotations

import json
import os

from cordee.cli import VERBS, env_check
from cordee.cli.options import json_option, verb_group

SHOW_HELP = "Show how this process was launched: ranks, nodes, master, GPUs, binding."


@verb_group("env", VERBS["env"].help)
def command() -> None:
    pass


command.add_command(env_check.command)


def collect(environ: dict[str, str]) -> dict:
    from cordee import profiles
    from cordee.errors import InputError
    from cordee.launch import binding as b
    from cordee.launch.launchenv import detect

    launch = detect(environ)
    gpus = b.read_gpus()
    doc = {"schema": "cordee.env/1", **launch.as_dict(), "hostname": os.uname().nodename}
    doc["suggested_profile"] = profiles.suggest(launch.nnodes)
    doc["gpus"] = [
        {
            "pci_bus_id": g.pci_bus_id,
            "numa_node": g.numa_node,
            "uuid": g.uuid,
            "local_cpus": b.format_cpulist(g.local_cpus),
        }
        for g in gpus
    ]
    try:
        bnd = b.plan_task_binding(environ, launch.local_rank, launch.local_world_size, gpus)
        doc["binding"] = bnd.as_dict()
    except InputError as e:
        doc["binding"] = {"error": str(e)}
    return doc


@command.command("show", help=SHOW_HELP, short_help=SHOW_HELP)
@json_option("cordee.env/1")
def show(as_json: bool) -> int:
    doc = collect(dict(os.environ))
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    keys = [
        "scheduler",
        "rank",
        "world_size",
        "local_rank",
        "local_world_size",
        "node_rank",
        "nnodes",
        "master_addr",
        "master_port",
        "master_port_source",
        "job_id",
        "step_id",
        "hostname",
        "suggested_profile",
    ]
    width = max(map(len, keys)) + 1
    lines = [f"{k:<{width}} {doc[k] if doc[k] is not None else '-'}" for k in keys]
    nodes = doc["nodes"]
    lines.append(f"{'nodes':<{width}} {', '.join(nodes[:8])}{' ...' if len(nodes) > 8 else ''}")
    lines.append(f"{'gpus':<{width}} {len(doc['gpus'])}")
    bnd = doc["binding"]
    if "error" in bnd:
        lines.append(f"{'binding':<{width}} ERROR: {bnd['error']}")
    else:
        lines.append(f"{'binding':<{width}} {bnd['mode']}, cuda:{bnd['cuda_device']}, CPUs {bnd['cpus']}")
    lines += [f"note: {note}" for note in doc["notes"]]
    print("\n".join(lines))
    return 0
