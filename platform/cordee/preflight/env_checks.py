"""Node-scope environment checks of `cordee preflight` (no torch): the fabric profile, NCCL and its
net plugin with the NICs it sees, and the libfabric provider, each judged against the system profile.

Every function takes plain values (a system profile, an environment mapping, the node name, or the
report of `cordee net show`) and returns Results, so the judging is testable without the hardware.
Check names: `env.*` are configuration (the same image and environment on every node: excluding the
node does not fix them), `net.*` are the node's own hardware (NIC count, speed, GPUDirect).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from cordee.errors import CordeeError, one_line
from cordee.preflight.results import DETAIL_MAX, Result

T = TypeVar("T")
NET_GRACE_S = 5.0  # beyond the per-probe timeout: collect() runs its probes side by side
_PROFILE_STATUS = {0: "ok", 1: "warn", 2: "fail"}  # env check exit code -> preflight status


class CheckTimeout(CordeeError):
    """A bounded step did not finish in time (its thread is abandoned, a daemon)."""

    exit_code = 3


def bounded_call(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """fn() in a daemon thread, waited for at most `timeout_s`: a library call that hangs (NVML on a
    bad GPU, a probe stuck in the kernel) cannot hang the check. Exceptions reach the caller."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - carried to the caller's thread
            box["exc"] = e

    thread = threading.Thread(target=work, name=f"preflight {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise CheckTimeout(f"{what} did not finish within {timeout_s:g} s")
    if "exc" in box:
        raise box["exc"]
    return box["value"]


def _cut(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def _names(items, limit: int = 6) -> str:
    names = [i.name for i in items]
    more = f", +{len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --- the fabric profile (`cordee env check`) -------------------------------------------------


def profile_check(
    environ: Mapping[str, str], node: str, *, profile_name: str | None = None, nnodes: int | None = None
) -> list[Result]:
    """The live environment against a fabric profile, as `cordee env check` does: ok, warn (missing
    or different values), fail (a dangerous value). value = the number of variables not ok.
    An unknown profile name is bad input (InputError, naming the known ones)."""
    from cordee import profiles
    from cordee.profiles.check import check_environment

    started = time.monotonic()
    chosen = "given" if profile_name else "suggested"
    name = profile_name or profiles.suggest(nnodes)
    report = check_environment(profiles.load(name), environ, nnodes)
    bad = [i for i in report.items if i.status != "ok"]
    parts = []
    for status in ("dangerous", "different", "missing"):
        items = [i for i in bad if i.status == status]
        if items:
            parts.append(f"{len(items)} {status} ({_names(items)})")
    detail = f"fabric profile {name} ({chosen}): " + ("; ".join(parts) or "every variable as expected")
    problems = [{"name": i.name, "status": i.status, "expected": i.expected, "actual": i.actual} for i in bad]
    return [
        Result(
            "env.profile",
            _PROFILE_STATUS[report.exit_code],
            node,
            value=float(len(bad)),
            threshold=0.0,
            unit="variables",
            detail=_cut(detail),
            duration_s=time.monotonic() - started,
            data={"profile": name, "kind": "max", "problems": problems},
        )
    ]


# --- NCCL, the net plugin, NICs, libfabric (`cordee net show`) --------------------------------


def expects_network(system) -> bool:
    """False for a profile that needs no NCCL network at all (cpu-ci: gloo, no NICs, no plugin)."""
    return bool(
        system.backend == "nccl" or system.net_plugin or system.nics_per_node or system.libfabric_provider
    )


def network_checks(system, environ: Mapping[str, str], node: str, *, timeout_s: float = 20.0) -> list[Result]:
    """Probe NCCL, the net plugin and libfabric the way a job would (netreport.collect: each library
    in a child process killed at `timeout_s`), then judge the report with judge_network()."""
    if not expects_network(system):
        return [
            Result(
                "env.nccl",
                "skip",
                node,
                detail=f"system {system.name} uses {system.backend} and expects no NCCL network",
            )
        ]
    from cordee.interconnect import netreport

    started = time.monotonic()
    try:
        doc = bounded_call(
            lambda: netreport.collect(environ, timeout=timeout_s), timeout_s + NET_GRACE_S, "network probe"
        )
    except CheckTimeout as e:
        return [Result("env.nccl", "error", node, detail=_cut(str(e)), duration_s=time.monotonic() - started)]
    except CordeeError as e:  # NCCL_NET_PLUGIN or an override naming a file that is not there
        return [
            Result("env.net_plugin", "fail", node, detail=_cut(str(e)), duration_s=time.monotonic() - started)
        ]
    return judge_network(doc, system, node, duration_s=time.monotonic() - started)


def judge_network(doc: dict, system, node: str, *, duration_s: float = 0.0) -> list[Result]:
    """Results from a `cordee net show` report (schema cordee.net/1) against the system profile."""
    plugin = doc.get("plugin") or {}
    out = [_nccl_result(doc.get("nccl") or {}, system, node), _plugin_result(plugin, system, node)]
    loaded = _plugin_loaded(plugin)
    out += _nic_results((plugin.get("devices") or []) if loaded else [], system, node, have_plugin=loaded)
    out.append(_libfabric_result(doc.get("libfabric") or {}, system, node))
    # the probes ran side by side: the wall time belongs to the first result only
    return [replace(out[0], duration_s=duration_s), *out[1:]]


def _plugin_loaded(p: dict) -> bool:
    return bool(p.get("path")) and not p.get("error") and not p.get("disabled") and p.get("init_result") == 0


def _nccl_result(n: dict, system, node: str) -> Result:
    if not n.get("found"):
        return Result("env.nccl", "skip", node, detail=_cut(f"libnccl.so.2 not found: {n.get('error')}"))
    if "error" in n:
        return Result("env.nccl", "fail", node, detail=_cut(f"{n.get('path')} does not load: {n['error']}"))
    return Result("env.nccl", "ok", node, detail=_cut(f"NCCL {n.get('version')} ({n.get('path')})"))


def _plugin_result(p: dict, system, node: str) -> Result:
    from cordee.interconnect.netreport import plugin_log_excerpt

    if not system.net_plugin:
        state = f"loaded {p.get('name')!r}" if _plugin_loaded(p) else "none loaded"
        return Result(
            "env.net_plugin", "skip", node, detail=f"system {system.name} expects no net plugin ({state})"
        )
    if _plugin_loaded(p):
        devs = p.get("devices") or []
        detail = (
            f"{p.get('name')!r} via ncclNetPlugin_v{p.get('abi_version')} ({p['path']}), {len(devs)} NICs"
        )
        return Result("env.net_plugin", "ok", node, detail=_cut(detail))
    if p.get("disabled"):
        why = "NCCL_NET_PLUGIN disables it: NCCL would use its internal transports"
    elif p.get("not_found"):
        why = f"no net plugin found (tried {', '.join(p.get('candidates') or [])}): NCCL falls back to TCP"
    else:
        log = "; ".join(m.get("message") or "" for m in plugin_log_excerpt(p.get("log") or [], limit=2))
        why = f"{p.get('path') or 'the plugin'}: {p.get('error') or 'init failed'}" + (
            f" ({log})" if log else ""
        )
    return Result(
        "env.net_plugin", "fail", node, detail=_cut(f"system {system.name} needs a net plugin: {why}")
    )


def _nic_results(devices: list[dict], system, node: str, *, have_plugin: bool) -> list[Result]:
    expected = system.nics_per_node
    if not expected:
        return [Result("net.nic_count", "skip", node, detail=f"system {system.name} names no NIC count")]
    if not have_plugin:
        return [
            Result("net.nic_count", "skip", node, detail="no net plugin loaded: its NICs cannot be counted")
        ]
    count = len(devices)
    status = "ok" if count == expected else "fail" if count < expected else "warn"
    names = ", ".join(d.get("name") or f"dev {d.get('index')}" for d in devices)
    out = [
        Result(
            "net.nic_count",
            status,
            node,
            value=float(count),
            threshold=float(expected),
            unit="NICs",
            detail=_cut(
                f"the net plugin sees {count} NICs, the system has {expected} per node: {names or '-'}"
            ),
            data={"metric": "nic_count", "kind": "min"},
        )
    ]
    if devices:
        out.append(_speed_result(devices, system, node))
        out.append(_gpudirect_result(devices, system, node))
    return out


def _speed_result(devices: list[dict], system, node: str) -> Result:
    speeds = [(d.get("speed_mbps") or 0) / 1000 for d in devices]
    slowest = min(speeds)
    slow_dev = devices[speeds.index(slowest)].get("name") or "?"
    limit = system.threshold("nic_speed_gbps")
    data = {"metric": "nic_speed_gbps", "speeds_gbps": speeds}
    if limit is None:
        return Result(
            "net.nic_speed",
            "ok",
            node,
            value=slowest,
            unit="Gb/s",
            detail=_cut(f"slowest NIC {slow_dev}: {slowest:g} Gb/s (system {system.name} sets no limit)"),
            data=data,
        )
    return Result(
        "net.nic_speed",
        limit.judge(slowest),
        node,
        value=slowest,
        threshold=limit.fail,
        unit="Gb/s",
        detail=_cut(f"slowest NIC {slow_dev}: {slowest:g} Gb/s ({limit.kind} {limit.fail:g})"),
        data={**data, "kind": limit.kind, "source": limit.source},
    )


def _gpudirect_result(devices: list[dict], system, node: str) -> Result:
    if not system.gpus_per_node:
        return Result("net.gpudirect", "skip", node, detail=f"system {system.name} has no GPUs")
    off = [
        d.get("name") or f"dev {d.get('index')}"
        for d in devices
        if not {"cuda", "dmabuf"} & set(d.get("ptr_support") or ())
    ]
    if not off:
        return Result(
            "net.gpudirect", "ok", node, detail=f"GPUDirect RDMA (CUDA or dma-buf) on all {len(devices)} NICs"
        )
    detail = (
        f"GPUDirect RDMA off on {len(off)} of {len(devices)} NICs ({', '.join(off)}): "
        "their traffic goes through host memory"
    )
    return Result("net.gpudirect", "warn", node, value=float(len(off)), unit="NICs", detail=_cut(detail))


def _libfabric_result(f: dict, system, node: str) -> Result:
    wanted = system.libfabric_provider
    if not wanted:
        return Result(
            "env.libfabric", "skip", node, detail=f"system {system.name} names no libfabric provider"
        )
    if not f.get("found"):
        return Result(
            "env.libfabric",
            "fail",
            node,
            detail=_cut(f"provider {wanted} needed, libfabric not found: {f.get('error')}"),
        )
    if "error" in f:
        return Result(
            "env.libfabric",
            "fail",
            node,
            detail=_cut(f"{f.get('path')} does not load or query: {f['error']}"),
        )
    providers = sorted({e.get("provider", "") for e in f.get("endpoints") or []})
    # "tcp;ofi_rxm" is a utility provider layered on a core one: the core provider is the first name
    if any(p.split(";")[0] == wanted for p in providers):
        return Result(
            "env.libfabric",
            "ok",
            node,
            detail=_cut(f"libfabric {f.get('version')}: provider {wanted} present"),
        )
    there = ", ".join(providers) or "none"
    detail = f"libfabric {f.get('version')} has no {wanted} provider with a device here (providers: {there})"
    return Result("env.libfabric", "fail", node, detail=_cut(detail))
