"""What the net plugin NCCL would load says about itself: typed records, and `probe_plugin`, the
parent side of the probe.

The ABI probe (probe_child.py) runs in a child process (child_protocol.run_python), so that a
plugin that crashes, hangs or aborts in init never takes cordee down; the child appends each
step to a progress file, so what it had learnt before it died (phase, log, devices) still
reaches the report. Not mirrored from NCCL: with a list in NCCL_NET_PLUGIN, NCCL moves on to the
next entry when a loaded plugin fails its init; cordee reports the first entry that loads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import NamedTuple

from cordee.interconnect.netplugin.resolve import check_paths, disabled_error, plugin_entries, plugin_request

SCHEMA = "cordee.netplugin/1"
PROBE_MODULE = "cordee.interconnect.netplugin.probe_child"


class NetDevice(NamedTuple):
    """One NIC as the plugin's getProperties describes it; None = not in this ABI version."""

    index: int
    name: str | None
    pci_path: str | None
    guid: int
    ptr_support: tuple[str, ...]  # of "host", "cuda", "dmabuf"
    reg_is_global: bool
    force_flush: bool | None  # v9+
    speed_mbps: int
    port: int
    latency_us: float
    max_comms: int
    max_recvs: int
    net_device_type: int  # 0 host, 1 unpack (GPU-side receive offload)
    net_device_version: int
    vdevs: tuple[int, ...] | None  # v9+: physical devices merged into this one
    max_p2p_bytes: int | None  # v9+
    max_coll_bytes: int | None  # v9+
    max_multi_request_size: int | None  # v11+
    rail_id: int | None  # v12+
    plane_id: int | None  # v12+

    def as_dict(self) -> dict:
        d = self._asdict()
        d["ptr_support"] = list(self.ptr_support)
        d["vdevs"] = None if self.vdevs is None else list(self.vdevs)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> NetDevice:
        d = dict(d)
        d["ptr_support"] = tuple(d["ptr_support"])
        d["vdevs"] = None if d["vdevs"] is None else tuple(d["vdevs"])
        return cls(**d)


class PluginReport(NamedTuple):
    requested: str | None  # NCCL_NET_PLUGIN as NCCL sees it (environment, then nccl.conf files)
    candidates: tuple[str, ...]  # names tried, in NCCL's order
    path: str | None  # real path of the file that loaded
    not_found: bool  # no candidate file exists (NCCL's "Could not find"); a load error is not this
    exported: tuple[int, ...]  # ncclNetPlugin_vN symbols found, newest first
    nccl_versions: tuple[int, ...] | None  # the ones the given libnccl looks for; None: not known
    abi_version: int | None  # the one used
    name: str | None  # the plugin's own name, e.g. "Libfabric"
    init_result: int | None
    devices: tuple[NetDevice, ...]
    log: tuple[dict, ...]  # the plugin's logger calls: {level, file, line, message}
    error: str | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.error is None and self.init_result == 0

    @property
    def disabled(self) -> bool:
        """NCCL_NET_PLUGIN=none (or empty): NCCL uses only its internal IB / socket transports."""
        return self.requested is not None and not plugin_entries(self.requested)

    def as_dict(self) -> dict:
        d = self._asdict()
        d.update(
            schema=SCHEMA,
            ok=self.ok,
            disabled=self.disabled,
            candidates=list(self.candidates),
            exported=list(self.exported),
            nccl_versions=None if self.nccl_versions is None else list(self.nccl_versions),
            devices=[dev.as_dict() for dev in self.devices],
            log=[dict(m) for m in self.log],
        )
        return d


def resolve_plugin(
    environ: Mapping[str, str] = os.environ, *, timeout: float = 10.0
) -> tuple[str | None, list[str], str | None]:
    """(requested, candidate names in NCCL's order, real path of the file that loads or None).

    The dlopen happens in a child process with `environ` (which adds the nccl.conf settings
    itself, as NCCL does), so LD_LIBRARY_PATH there counts.
    """
    requested, candidates = plugin_request(environ)
    if not candidates:
        return requested, candidates, None
    state, _ = _run_child(["--resolve-only"], environ, timeout)
    return requested, candidates, state.get("path")


def probe_plugin(
    environ: Mapping[str, str] = os.environ,
    *,
    path: str | None = None,
    nccl: str | None = None,
    timeout: float = 10.0,
) -> PluginReport:
    """Load the plugin NCCL would load (or `path`) in a child process and report what it says.

    `nccl`, the libnccl.so.2 a job would load, limits the ABI versions to those that NCCL looks
    for: the probe then reads the plugin through the table NCCL would use. A crash, hang (the
    child's process group is killed after `timeout` s), abort, load error or garbage output
    becomes PluginReport.error; only a missing path named by the user raises PluginError.
    """
    start = time.monotonic()
    args = ["--nccl", nccl] if nccl else []
    if path is not None:
        requested, candidates = None, [path]
        args.append(path)
        check_paths([path], "net plugin path")
    else:
        requested, candidates = plugin_request(environ)
        if not candidates:
            return _report(requested, candidates, {}, disabled_error(requested), start)
    state, error = _run_child(args, environ, timeout)
    return _report(requested, candidates, state, error, start)


def _report(requested, candidates, state: dict, error: str | None, start: float) -> PluginReport:
    return PluginReport(
        requested=requested,
        candidates=tuple(state.get("candidates") or candidates),
        path=state.get("path"),
        not_found=bool(state.get("not_found")) and error is None,
        exported=tuple(state.get("exported", ())),
        nccl_versions=None if state.get("nccl_versions") is None else tuple(state["nccl_versions"]),
        abi_version=state.get("abi_version"),
        name=state.get("name"),
        init_result=state.get("init_result"),
        devices=tuple(NetDevice.from_dict(d) for d in state.get("devices", ())),
        log=tuple(state.get("log", ())),
        error=error or state.get("error"),
        elapsed_s=round(time.monotonic() - start, 3),
    )


def _read_progress(path: str) -> dict:
    """Fold the child's progress events (JSON lines) into what it had learnt when it stopped."""
    state: dict = {"log": [], "devices": []}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if "log" in event:
                    state["log"].append(event["log"])
                elif "device" in event:
                    state["devices"].append(event["device"])
                else:
                    state.update(event.get("set", {}))
    except OSError:
        pass
    return state


def _run_child(args: list[str], environ: Mapping[str, str], timeout: float) -> tuple[dict, str | None]:
    """Run the probe child; return (its state, an error line or None)."""
    import tempfile

    # lazily: the probe child imports this module too, and needs no subprocess machinery
    from cordee.interconnect.child_protocol import run_python
    from cordee.process import signal_name

    fd, progress = tempfile.mkstemp(prefix="cordee-netplugin-", suffix=".jsonl")
    os.close(fd)
    try:
        run = run_python(PROBE_MODULE, [*args, "--progress", progress], environ=environ, timeout=timeout)
        state = _read_progress(progress)
    finally:
        os.unlink(progress)
    phase = state.get("phase") or "start-up of the probe"
    if run.timed_out:
        return state, f"{phase} did not return within {timeout:.1f} s"
    if run.returncode < 0:
        return state, f"crashed in {phase} ({signal_name(run.returncode)})"
    if run.returncode != 0:
        tail = run.stderr.strip().splitlines()[-1:] or [""]
        return state, f"exited with status {run.returncode} in {phase}: {tail[0][:200]}".rstrip(": ")
    try:
        doc = json.loads(run.stdout)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError("not a cordee.netplugin/1 document")
    except ValueError:
        return state, f"probe printed no valid JSON: {run.stdout[:200]!r}"
    return doc, None
