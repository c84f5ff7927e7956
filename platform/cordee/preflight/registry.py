"""The checks of each level, in the order they run.

quick: the environment and the GPUs through NVML, once per node, without torch (`cordee launch
--preflight quick` runs it in every task); standard: quick + the storage checks (storage_checks,
once per node, no torch) + GEMM and memory copy on every rank,
stragglers, verified collectives within and across nodes, bad-node isolation; long: the standard
checks with larger sweeps and more iterations. The torch checks live in a module loaded by name
when a level needs them, so that nothing on the quick path can import torch.

Test-only switch: CORDEE_PREFLIGHT_REGISTRY=MODULE:FUNCTION replaces this list with
FUNCTION(level) (a list of Check), so tests can add checks that hang, crash or look around.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from collections.abc import Mapping

from cordee.errors import InputError, shown
from cordee.preflight.context import Context
from cordee.preflight.results import LEVELS, Check, Result, level_includes

TORCH_CHECKS = "cordee.preflight.checks_torch"
REGISTRY_VAR = "CORDEE_PREFLIGHT_REGISTRY"
NET_TIMEOUT_S = 20.0  # each library probe of the network check (in a child, killed at this)
NVML_TIMEOUT_S = 15.0


def _profile(ctx: Context) -> list[Result]:
    from cordee.preflight.env_checks import expects_network, profile_check

    if not expects_network(ctx.profile):  # the fabric profiles set NCCL/libfabric variables
        why = f"system {ctx.profile.name} uses {ctx.profile.backend}: no fabric profile applies"
        return [Result("env.profile", "skip", ctx.node, detail=why)]
    return profile_check(ctx.environ, ctx.node, nnodes=ctx.nnodes)


def _network(ctx: Context) -> list[Result]:
    from cordee.preflight.env_checks import network_checks

    return network_checks(ctx.profile, ctx.environ, ctx.node, timeout_s=NET_TIMEOUT_S)


def _gpus(ctx: Context) -> list[Result]:
    from cordee.preflight.gpu_health import gpu_checks

    own = {os.getpid(), os.getppid(), *ctx.own_pids}
    return gpu_checks(ctx.profile, ctx.environ, ctx.node, own_pids=own, timeout_s=NVML_TIMEOUT_S)


def quick_checks() -> list[Check]:
    return [
        Check("env.profile", "node", "quick", 10.0, _profile, needs_torch=False),
        Check("env.network", "node", "quick", NET_TIMEOUT_S + 10.0, _network, needs_torch=False),
        Check("gpu.health", "node", "quick", NVML_TIMEOUT_S + 5.0, _gpus, needs_torch=False),
    ]


def checks(level: str, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check of `level` (InputError for an unknown level)."""
    if level not in LEVELS:
        raise InputError(f"level {shown(level)} is not one of {', '.join(LEVELS)}")
    env = os.environ if environ is None else environ
    if env.get(REGISTRY_VAR):
        spec = env[REGISTRY_VAR]
        try:
            found = list(_from_switch(spec)(level))
        except TypeError as e:  # a function of another shape, or one that returns no list
            raise InputError(f"{REGISTRY_VAR}={shown(spec)}: FUNCTION(level) failed: {e}") from None
        if not all(isinstance(c, Check) for c in found):
            raise InputError(f"{REGISTRY_VAR}={shown(spec)}: FUNCTION(level) must return a list of Check")
    else:
        found = quick_checks()
        if level != "quick":
            from cordee.preflight.storage_checks import storage_checks

            found += storage_checks()
            found += importlib.import_module(TORCH_CHECKS).checks(level)
    return [c for c in found if level_includes(level, c.level)]


def _from_switch(spec: str):
    module, sep, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name) if sep else None
    except (ImportError, AttributeError) as e:
        raise InputError(f"{REGISTRY_VAR}={shown(spec)}: {e}") from None
    if not callable(fn):
        raise InputError(f"{REGISTRY_VAR}={shown(spec)}: expected MODULE:FUNCTION")
    return fn


def select(found: list[Check], patterns: str | None) -> list[Check]:
    """The checks whose name matches one of the comma-separated globs (all of them for None)."""
    if not patterns:
        return found
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [c for c in found if any(fnmatch.fnmatchcase(c.name, g) for g in globs)]
    if not chosen:
        names = ", ".join(c.name for c in found)
        raise InputError(f"--checks {shown(patterns)} matches none of this level's checks: {names}")
    return chosen


def runs_here(check: Check, local_rank: int) -> bool:
    """Node checks run once per node (local rank 0); rank and job checks on every rank."""
    return check.scope != "node" or local_rank == 0
