"""`cordee env show [--json]` and `cordee env check` (env_check.py).

Kept light on purpose: this runs on login nodes and inside every task, so no torch, numpy or
NVML here (the benchmark bench_cli.py holds it under 3x `python -c pass`)."""

from __future__ import annotations

import json
import os
import socket

import click

from cordee.cli.env_check import check


@click.group()
def env() -> None:
    """Show the detected launch environment; check it against a profile."""


env.add_command(check)


def collect(environ: dict[str, str]) -> dict:
    from cordee import profiles
    from cordee.cluster import binding as b
    from cordee.cluster.launchenv import detect
    from cordee.errors import InputError

    launch = detect(environ)
    gpus = b.read_gpus()
    doc = {"schema": "cordee.env/1", **launch.as_dict(), "hostname": socket.gethostname()}
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
        bnd = b.plan_binding(
            gpus,
            environ.get("CUDA_VISIBLE_DEVICES"),
            launch.local_rank,
            launch.local_world_size,
            frozenset(os.sched_getaffinity(0)),
            keep_cpu_binding=b.slurm_bound_cpus(environ),
        )
        doc["binding"] = {
            "mode": bnd.mode,
            "cuda_device": bnd.device_index,
            "gpu": bnd.gpu.pci_bus_id if bnd.gpu else None,
            "cpus": b.format_cpulist(bnd.cpus),
            "omp_threads": bnd.omp_threads,
            "reason": bnd.reason,
        }
    except InputError as e:
        doc["binding"] = {"error": str(e)}
    return doc


@env.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema cordee.env/1).")
def show(as_json: bool) -> None:
    """Show how this process was launched: ranks, nodes, master, GPUs, binding."""
    doc = collect(dict(os.environ))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
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
    for k in keys:
        click.echo(f"{k:<{width}} {doc[k] if doc[k] is not None else '-'}")
    nodes = doc["nodes"]
    click.echo(f"{'nodes':<{width}} {', '.join(nodes[:8])}{' ...' if len(nodes) > 8 else ''}")
    click.echo(f"{'gpus':<{width}} {len(doc['gpus'])}")
    bnd = doc["binding"]
    if "error" in bnd:
        click.echo(f"{'binding':<{width}} ERROR: {bnd['error']}")
    else:
        click.echo(f"{'binding':<{width}} {bnd['mode']}, cuda:{bnd['cuda_device']}, CPUs {bnd['cpus']}")
    for note in doc["notes"]:
        click.echo(f"note: {note}")
