"""`cordee launch --preflight quick`: the quick level for this task's node, run in the task itself
before the command starts (no side channel, no torch: the environment and NVML checks only).
A failure refuses the launch with one line naming the node, the check and what is wrong."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from cordee.errors import CordeeError
from cordee.launch.launchenv import LaunchEnv
from cordee.preflight import registry
from cordee.preflight.context import Context, run_check
from cordee.preflight.results import Result, severity


class PreflightRefused(CordeeError):
    """The node failed the quick preflight: the command is not started (exit 2)."""


def quick_gate(environ: Mapping[str, str], launch: LaunchEnv, node: str) -> str:
    """Run the quick checks here; the line to log when they pass (warnings included, named).
    PreflightRefused on a failure or an error."""
    from cordee.preflight import systems

    started = time.monotonic()
    models = gpu_models()
    name = systems.suggest_system(models[0] if models else None, len(models))
    profile = systems.load_system(name, gpus=len(models) or None)
    ctx = Context(environ, launch, node, "quick", profile)
    results = [r for check in registry.checks("quick", environ) for r in run_check(check, ctx)]
    worst = sorted(results, key=lambda r: -severity(r.status))
    took = time.monotonic() - started
    if worst and worst[0].status in ("fail", "error"):
        bad = [r for r in worst if r.status in ("fail", "error")]
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PreflightRefused(f"{node}: preflight quick: {_said(bad[0])}{more}; not starting the command")
    head = f"preflight quick on {node}: {len(results)} results, system {profile.name}, {took:.1f} s"
    warned = [r for r in worst if r.status == "warn"]
    if not warned:
        return head + ", all ok"
    more = f" (+{len(warned) - 1} more)" if len(warned) > 1 else ""
    return f"{head}; warning: {_said(warned[0])}{more}"


def _said(r: Result) -> str:
    return f"{r.check} {r.status}: {r.detail}"


def gpu_models(root: str = "/") -> list[str]:
    """The model name of each NVIDIA GPU of this node, from the driver's /proc files (no NVML,
    no torch); "" where the driver does not say."""
    from cordee.launch.binding import read_gpus

    names = []
    for gpu in read_gpus(root):
        model = ""
        try:
            with open(os.path.join(root, "proc/driver/nvidia/gpus", gpu.pci_bus_id, "information")) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() == "Model":
                        model = value.strip()
        except OSError:
            pass
        names.append(model)
    return names
