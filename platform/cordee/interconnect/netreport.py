"""What `cordee net show` reports: NCCL, its net plugin and NICs, libfabric, CXI devices and
high-speed interfaces, each with a one-line verdict (netverdicts.py), and the text rendering.

The libraries are loaded in child processes (child_protocol.py) with a timeout, the plugin probe
and the libnccl and libfabric queries running side by side; sysfs is read here. Bad input, such
as an override or NCCL_NET_PLUGIN path that does not exist, raises InputError before anything is
loaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from cordee.errors import one_line
from cordee.interconnect import sysfs
from cordee.interconnect.netverdicts import verdicts, worst

SCHEMA = "cordee.net/1"
PLUGIN_LOG_LINES = 5  # of the plugin's own log, shown under a failing plugin verdict


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
    from cordee.interconnect.netplugin import probe as netplugin
    from cordee.interconnect.netplugin.resolve import plugin_request

    started = time.monotonic()
    # bad input first (PluginError / LibraryNotFound with an override): nothing is loaded
    plugin_request(environ)
    nccl_doc, nccl_path = _locate(nccl.find_libnccl, nccl.OVERRIDE_VAR, environ)
    fabric_doc, fabric_path = _locate(libfabric.find_libfabric, libfabric.OVERRIDE_VAR, environ)

    # the plugin is read through the ABI version this libnccl would use
    probe = _in_thread(netplugin.probe_plugin, environ, nccl=nccl_path, timeout=timeout)
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


def plugin_log_excerpt(log: list[dict], limit: int = PLUGIN_LOG_LINES) -> list[dict]:
    """The plugin's own words on why it failed: its last WARN (or ABORT) lines, else its last lines."""
    warnings = [m for m in log if m.get("level") in ("WARN", "ABORT")]
    return (warnings or log)[-limit:]


def _log_line(m: dict) -> str:
    where = f" {os.path.basename(m['file'])}:{m['line']}" if m.get("file") else ""
    # one_line: a plugin's message must not forge lines of the report
    return f"{'':17}{m.get('level')}{where}: {one_line(m.get('message') or '')}"


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
    log_shown = False
    for v in doc["verdicts"]:
        lines.append(f"[{_MARK[v['level']]}] {v['item']:<9} {v['message']}")
        if v["item"] == "plugin" and v["level"] == "fail" and not log_shown:
            lines += [_log_line(m) for m in plugin_log_excerpt(doc["plugin"].get("log") or [])]
            log_shown = True
    return "\n".join(lines)
