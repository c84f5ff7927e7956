"""What `cordee net show` reports: NCCL, its net plugin and NICs, libfabric, CXI devices and
high-speed interfaces, each with a one-line verdict.

The libraries are loaded in child processes (child_protocol.py) with a timeout, the plugin probe and the
libnccl and libfabric queries running side by side; sysfs is read here. Bad input, such as an
override or NCCL_NET_PLUGIN path that does not exist, raises InputError before anything is loaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from cordee.interconnect import sysfs

SCHEMA = "cordee.net/1"
LEVELS = ("ok", "info", "warn", "fail")  # worst last; exit code: ok/info 0, warn 1, fail 2


def _locate(find, override: str, environ: Mapping[str, str]) -> tuple[dict, str | None]:
    """(section, path) for a library; a missing library is a finding, a bad override is an error."""
    from cordee.interconnect.libload import LibraryNotFound

    try:
        loc = find(environ)
    except LibraryNotFound as e:
        if environ.get(override):  # the user named a file that is not there: bad input
            raise
        return {"found": False, "error": str(e)}, None
    return {"found": True, "path": loc.path, "how": loc.how}, loc.path


def _in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    """Run fn in a thread; box["value"] or box["exc"] afterwards (join first)."""
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - carried to the caller's thread
            box["exc"] = e

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t, box


def _result(job: tuple[threading.Thread, dict]):
    thread, box = job
    thread.join()
    if "exc" in box:
        raise box["exc"]
    return box["value"]


def _query(section: str, args: list[str], environ, timeout: float) -> dict:
    """One library in its own child: the three probes overlap, and libfabric's provider
    discovery (most of the wall time, as with `fi_info -l`) hides the others."""
    from cordee.interconnect import child_protocol as child

    res = child.run_module(
        "cordee.interconnect.library_child", args, environ=environ, timeout=timeout, what=f"{section} query"
    )
    return {"error": res.error} if res.doc is None else res.doc.get(section, {"error": "no answer"})


def collect(
    environ: Mapping[str, str] = os.environ,
    *,
    timeout: float = 20.0,
    provider: str | None = None,
    root: str = "/",
) -> dict:
    from cordee.interconnect import libfabric, nccl
    from cordee.interconnect.netplugin import resolve as netplugin

    started = time.monotonic()
    # bad input first (PluginError / LibraryNotFound with an override): nothing is loaded
    netplugin.plugin_request(environ)
    nccl_doc, nccl_path = _locate(nccl.find_libnccl, nccl.OVERRIDE_VAR, environ)
    fabric_doc, fabric_path = _locate(libfabric.find_libfabric, libfabric.OVERRIDE_VAR, environ)

    probe = _in_thread(netplugin.probe_plugin, environ, timeout=timeout)
    jobs = {}
    if nccl_path:
        jobs["nccl"] = _in_thread(_query, "nccl", ["--nccl", nccl_path], environ, timeout)
    if fabric_path:
        args = ["--libfabric", fabric_path] + (["--provider", provider] if provider else [])
        jobs["libfabric"] = _in_thread(_query, "libfabric", args, environ, timeout)
    for section, doc in (("nccl", nccl_doc), ("libfabric", fabric_doc)):
        if section in jobs:
            doc.update(_result(jobs[section]))
    report = _result(probe)

    interfaces = sysfs.net_interfaces(root)
    doc = {
        "schema": SCHEMA,
        "hostname": os.uname().nodename,
        "nccl": nccl_doc,
        "plugin": report.as_dict(),
        "libfabric": fabric_doc,
        "cxi": [d.as_dict() for d in sysfs.cxi_devices(root, interfaces)],
        "interfaces": [i.as_dict() for i in interfaces if i.high_speed],
        "infiniband": [p.as_dict() for p in sysfs.ib_ports(root)],
    }
    doc["verdicts"] = verdicts(doc)
    doc["status"] = worst(v["level"] for v in doc["verdicts"])
    doc["elapsed_s"] = round(time.monotonic() - started, 3)
    return doc


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


def _plugin_verdicts(p: dict, n_cxi: int) -> list[dict]:
    if p.get("disabled"):
        return [_v("plugin", "info", "disabled by NCCL_NET_PLUGIN: NCCL uses its internal transports")]
    if p.get("path") is None and not (p.get("error") or "").startswith("no plugin found"):
        return [_v("plugin", "fail", p["error"])]  # found but could not load: a missing dependency?
    if p.get("path") is None:
        return [
            _v(
                "plugin",
                "warn" if n_cxi else "info",
                "no NCCL net plugin found (tried "
                + ", ".join(p.get("candidates") or [])
                + "): NCCL falls back to IB verbs or TCP sockets"
                + (" — on Slingshot that is TCP, a fraction of the link speed" if n_cxi else ""),
            )
        ]
    if p.get("error"):
        return [_v("plugin", "fail", f"{p['path']}: {p['error']}")]
    devs = p.get("devices") or []
    out = [
        _v("plugin", "ok", f"{p.get('name')!r} via ncclNetPlugin_v{p.get('abi_version')}, {len(devs)} NICs")
    ]
    if not devs:
        out.append(_v("plugin", "fail", "the plugin reports no network devices"))
    elif not all("cuda" in d.get("ptr_support", ()) or "dmabuf" in d.get("ptr_support", ()) for d in devs):
        out.append(_v("plugin", "warn", "GPUDirect RDMA off on some NICs: no CUDA/dma-buf pointer support"))
    if n_cxi and devs and len(devs) != n_cxi:
        out.append(
            _v("plugin", "warn", f"the plugin sees {len(devs)} NICs but the node has {n_cxi} CXI devices")
        )
    return out


def _libfabric_verdicts(f: dict, n_cxi: int) -> list[dict]:
    if not f.get("found"):
        return [_v("libfabric", "warn" if n_cxi else "info", f"libfabric.so.1 not found: {f.get('error')}")]
    if "error" in f:
        return [_v("libfabric", "fail", f"{f['path']} does not load or query: {f['error']}")]
    provs = sorted({e["provider"] for e in f.get("endpoints", [])})
    out = [_v("libfabric", "ok", f"libfabric {f['version']}: providers {', '.join(provs) or 'none'}")]
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
        out.append(
            _v(
                "interface",
                level,
                f"{i['name']} ({i['kind']}, {i['driver'] or '-'}): {i['operstate']}, {speed}",
            )
        )
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


_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


def _plugin_lines(p: dict) -> list[str]:
    lines = [f"plugin     {p.get('path') or '-'} (requested: {p.get('requested') or 'default'})"]
    if p.get("abi_version"):
        lines.append(f"           name {p.get('name')!r}, ncclNetPlugin_v{p['abi_version']}")
    for d in p.get("devices") or []:
        ptr = "+".join(d["ptr_support"]) or "-"
        speed = f"{d['speed_mbps'] / 1000:g} Gb/s" if d.get("speed_mbps") else "speed 0"
        lines.append(
            f"  nic {d['index']}: {d['name']}  pci {d['pci_path'] or '-'}  ptr {ptr}  {speed}  "
            f"port {d['port']}  latency {d['latency_us']:g} us  maxComms {d['max_comms']}"
        )
    return lines


def render_text(doc: dict) -> str:
    n, f = doc["nccl"], doc["libfabric"]
    lines = [f"host       {doc['hostname']}"]
    lines.append(f"nccl       {n.get('path', '-')} {n.get('version', '')}".rstrip())
    lines += _plugin_lines(doc["plugin"])
    lines.append(f"libfabric  {f.get('path', '-')} {f.get('version', '')}".rstrip())
    seen = set()
    for e in f.get("endpoints", []):
        key = (e["provider"], e["domain"], e["ep_type"])
        if key not in seen:
            seen.add(key)
            lines.append(f"  {e['provider']:<16} domain {e['domain']:<12} {e['ep_type']}")
    for d in doc["cxi"]:
        lines.append(
            f"cxi        {d['name']} {d['dev_node'] or '(no /dev node)'} pci {d['pci_slot'] or '-'} "
            f"link {d['link_state'] or '?'} {d['link_speed'] or ''} {d['netdev'] or ''}".rstrip()
        )
    lines.append("")
    lines += [f"[{_MARK[v['level']]}] {v['item']:<9} {v['message']}" for v in doc["verdicts"]]
    return "\n".join(lines)
