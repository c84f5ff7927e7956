"""The one-line verdicts of `cordee net show`, from its report (netreport.collect).

Each verdict is {item, level, message}; levels rise ok < info < warn < fail, and the worst
decides the exit code (ok/info 0, warn 1, fail 2). A finding that makes a job fall back to TCP or
fail, while NCCL itself would say nothing louder than INFO, is a failure here: a plugin file that
exists but does not load, a plugin whose init fails, FI_PROVIDER naming no provider there is.
"""

from __future__ import annotations

from cordee.interconnect import sysfs
from cordee.interconnect.libfabric import FI_ENODATA, PROVIDER_VAR, provider_filter

LEVELS = ("ok", "info", "warn", "fail")  # worst last


def worst(levels) -> str:
    return max(levels, key=LEVELS.index, default="ok")


def _v(item: str, level: str, message: str) -> dict:
    return {"item": item, "level": level, "message": message}


def _nccl_verdict(n: dict) -> dict:
    if not n.get("found"):
        return _v("nccl", "warn", f"libnccl.so.2 not found: {n.get('error')}")
    if "error" in n:
        return _v("nccl", "fail", f"{n['path']} does not load: {n['error']}")
    return _v("nccl", "ok", f"NCCL {n['version']} ({n['how']}: {n['path']})")


def _gpudirect_verdict(devs: list[dict]) -> dict | None:
    off = [
        d.get("name") or f"dev {i}"
        for i, d in enumerate(devs)
        if not {"cuda", "dmabuf"} & set(d.get("ptr_support", ()))
    ]
    if not off:
        return None
    where = f"on all {len(devs)} NICs" if len(off) == len(devs) else f"on {len(off)} of {len(devs)} NICs"
    names = "" if len(off) == len(devs) else f" ({', '.join(off)})"
    return _v("plugin", "warn", f"GPUDirect RDMA off {where}{names}: no CUDA/dma-buf pointer support")


def _plugin_verdicts(p: dict, n_cxi: int) -> list[dict]:
    if p.get("disabled"):
        return [_v("plugin", "info", "disabled by NCCL_NET_PLUGIN: NCCL uses its internal transports")]
    if p.get("not_found"):
        on_slingshot = " — on Slingshot that is TCP, a fraction of the link speed" if n_cxi else ""
        tried = ", ".join(p.get("candidates") or [])
        message = f"no NCCL net plugin found (tried {tried}): NCCL falls back to IB verbs or TCP sockets"
        return [_v("plugin", "warn" if n_cxi else "info", message + on_slingshot)]
    if p.get("path") is None:  # a file that exists but does not load, or a crash while loading
        return [_v("plugin", "fail", p.get("error") or "the plugin did not load")]
    if p.get("error"):
        return [_v("plugin", "fail", f"{p['path']}: {p['error']}")]
    devs = p.get("devices") or []
    out = [
        _v("plugin", "ok", f"{p.get('name')!r} via ncclNetPlugin_v{p.get('abi_version')}, {len(devs)} NICs")
    ]
    if not devs:
        out.append(_v("plugin", "fail", "the plugin reports no network devices"))
    elif gpudirect := _gpudirect_verdict(devs):
        out.append(gpudirect)
    if n_cxi and devs and len(devs) != n_cxi:
        out.append(
            _v("plugin", "warn", f"the plugin sees {len(devs)} NICs but the node has {n_cxi} CXI devices")
        )
    return out


def _no_endpoints_verdict(f: dict, head: str) -> dict:
    """fi_getinfo found nothing (-FI_ENODATA): say which filter emptied the list."""
    enodata = f"fi_getinfo: -{FI_ENODATA}, FI_ENODATA"
    if f.get("provider_filter"):
        also = f" (and {PROVIDER_VAR}={f['fi_provider']!r})" if f.get("fi_provider") else ""
        return _v("libfabric", "warn", f"{head}: no endpoints for --provider {f['provider_filter']}{also}")
    if f.get("fi_provider"):
        return _v(
            "libfabric",
            "fail",
            f"{PROVIDER_VAR}={f['fi_provider']!r}: {head} has no endpoints ({enodata}): no provider of "
            f"that name, or none with a usable device here",
        )
    return _v("libfabric", "warn", f"{head}: no endpoints at all ({enodata}): no provider has a device here")


def _unmatched_fi_provider(f: dict, provs: list[str]) -> list[dict]:
    """FI_PROVIDER=cxi,tcp where cxi gives nothing: jobs quietly run over the other one."""
    negated, names = provider_filter(f.get("fi_provider"))
    if negated or f.get("provider_filter"):
        return []
    present = {name for p in provs for name in p.split(";")}
    missing = [name for name in names if name not in present]
    if not missing:
        return []
    verb = "gives" if len(missing) == 1 else "give"
    message = (
        f"{PROVIDER_VAR}={f['fi_provider']!r} names {', '.join(missing)}, which {verb} no endpoints here"
    )
    return [_v("libfabric", "warn", message)]


def _libfabric_verdicts(f: dict, n_cxi: int) -> list[dict]:
    if not f.get("found"):
        return [_v("libfabric", "warn" if n_cxi else "info", f"libfabric.so.1 not found: {f.get('error')}")]
    if "error" in f:
        return [_v("libfabric", "fail", f"{f['path']} does not load or query: {f['error']}")]
    head = f"libfabric {f['version']}"
    provs = sorted({e["provider"] for e in f.get("endpoints", [])})
    if not provs:
        return [_no_endpoints_verdict(f, head)]
    out = [_v("libfabric", "ok", f"{head}: providers {', '.join(provs)}")]
    out += _unmatched_fi_provider(f, provs)
    if n_cxi and not any(p.split(";")[0] == "cxi" for p in provs):
        out.append(_v("libfabric", "fail", "CXI devices present but this libfabric has no cxi provider"))
    return out


def _cxi_verdicts(devices: list[dict]) -> list[dict]:
    if not devices:
        return [_v("cxi", "info", "no CXI devices (not a Slingshot node)")]
    out = []
    for d in devices:
        up = sysfs.link_is_up(d["link_state"])
        where = f"{d['name']}" + (f" ({d['netdev']})" if d["netdev"] else "")
        if up is False:
            out.append(_v("cxi", "fail", f"{where}: link {d['link_state']}"))
        elif d["dev_node"] is None:
            out.append(_v("cxi", "fail", f"{where}: no /dev/{d['name']} (not visible in this container?)"))
        else:
            state = d["link_state"] or "state unknown"
            out.append(
                _v("cxi", "ok" if up else "info", f"{where}: link {state} {d['link_speed'] or ''}".rstrip())
            )
    return out


def _interface_verdicts(interfaces: list[dict]) -> list[dict]:
    out = []
    for i in interfaces:
        speed = f"{i['speed_mbps'] // 1000} Gb/s" if i["speed_mbps"] else "speed unknown"
        level = "ok" if i["operstate"] == "up" else "warn"
        message = f"{i['name']} ({i['kind']}, {i['driver'] or '-'}): {i['operstate']}, {speed}"
        out.append(_v("interface", level, message))
    return out


def verdicts(doc: dict) -> list[dict]:
    n_cxi = len(doc["cxi"])
    return (
        [_nccl_verdict(doc["nccl"])]
        + _plugin_verdicts(doc["plugin"], n_cxi)
        + _libfabric_verdicts(doc["libfabric"], n_cxi)
        + _cxi_verdicts(doc["cxi"])
        + _interface_verdicts(doc["interfaces"])
    )
