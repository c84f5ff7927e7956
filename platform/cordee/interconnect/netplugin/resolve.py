"""The NCCL net plugin (e.g. aws-ofi-nccl) as NCCL itself finds and sees it.

Parent side: which file NCCL would load (its resolution rules, reproduced from NCCL's
src/plugin/net.cc and plugin_open.cc), typed records of what the plugin reports, and
`probe_plugin`, which runs the ABI probe (cordee.interconnect.netplugin.probe_child) in a child
process (child.run_python) so that a plugin that crashes, hangs or aborts in init never takes
cordee down; the child appends each step to a progress file, so what it had learnt before it
died (phase, log, devices) still reaches the report.

Resolution (NCCL 2.2x): NCCL_NET_PLUGIN unset -> "libnccl-net.so"; "none" (any case) or ""
-> no external plugin; otherwise a comma-separated list, each entry X tried as X itself,
then as "libnccl-net-X.so" unless X contains "/" or already looks like "lib*.so". Names
without "/" go through the dynamic linker's search (LD_LIBRARY_PATH, ld.so.cache, ...),
so the child does the dlopen with the caller's environment. Like NCCL, settings from
NCCL_CONF_FILE (or ~/.nccl.conf) and then /etc/nccl.conf fill in variables the environment
does not set. Not mirrored: with a list, NCCL moves on to the next entry when a loaded
plugin fails; cordee reports the first entry that loads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import NamedTuple

from cordee.errors import InputError
from cordee.interconnect.nccl import RESULT_NAMES

ABI_VERSIONS = (12, 11, 10, 9, 8)  # newest first; what cordee understands
NCCL_SCANNED_VERSIONS = (12, 11, 10, 9, 8, 7, 6)  # what NCCL itself looks for, in its order
DEFAULT_PLUGIN = "libnccl-net.so"
SCHEMA = "cordee.netplugin/1"
PROBE_MODULE = "cordee.interconnect.netplugin.probe_child"
SYSTEM_CONF_FILE = "/etc/nccl.conf"
PTR_BITS = (("host", 0x1), ("cuda", 0x2), ("dmabuf", 0x4))


class PluginError(InputError):
    """NCCL_NET_PLUGIN (or an explicit path) names a file that does not exist."""


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
    exported: tuple[int, ...]  # ncclNetPlugin_vN symbols found, newest first
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
            devices=[dev.as_dict() for dev in self.devices],
            log=[dict(m) for m in self.log],
        )
        return d


def disabled_error(requested: str | None) -> str:
    return f"disabled: NCCL_NET_PLUGIN={requested!r}, NCCL uses only its internal IB/socket transports"


def result_name(rc: int) -> str:
    return RESULT_NAMES.get(rc, "unknown result")


def ptr_support_names(bits: int) -> tuple[str, ...]:
    return tuple(name for name, bit in PTR_BITS if bits & bit)


def plugin_entries(value: str | None) -> list[str]:
    """The plugin names NCCL reads from NCCL_NET_PLUGIN (None = unset = the default)."""
    if value is None:
        return [DEFAULT_PLUGIN]
    if value.lower() == "none":
        return []
    # strtok(",") semantics: empty entries vanish; NCCL skips names of 255 characters or more
    return [name for name in value.split(",") if name and len(name) < 255]


def candidate_names(value: str | None) -> list[str]:
    """Every name NCCL hands to dlopen for NCCL_NET_PLUGIN=value, in its order."""
    names: list[str] = []
    for entry in plugin_entries(value):
        names.append(entry)
        if value is not None and "/" not in entry and not (entry.startswith("lib") and entry.endswith(".so")):
            names.append(f"libnccl-net-{entry}.so")
    return names


def _conf_files(environ: Mapping[str, str]) -> list[str]:
    user_file = environ.get("NCCL_CONF_FILE")
    if not user_file:
        try:
            import pwd

            user_file = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".nccl.conf")  # NCCL: getpwuid
        except (ImportError, KeyError):
            user_file = None
    return [f for f in (user_file, SYSTEM_CONF_FILE) if f]


def nccl_conf_settings(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Variables NCCL would add from its config files: {name: (value, file)}.

    NCCL reads NCCL_CONF_FILE (else ~/.nccl.conf), then /etc/nccl.conf, with setenv(..., 0):
    the environment wins, then the first file. Lines are KEY=VALUE; a leading '#' is a comment.
    """
    found: dict[str, tuple[str, str]] = {}
    for path in _conf_files(environ):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if key and key not in environ and key not in found:
                found[key] = (value, path)
    return found


def _check_paths(entries: list[str], what: str) -> None:
    for entry in entries:
        if "/" in entry and not os.path.exists(entry):
            raise PluginError(
                f"{what}: {entry} does not exist (a path must name the plugin file; a bare name X is "
                f"looked up as X and libnccl-net-X.so on the library path; 'none' disables plugins)"
            )


def _requested(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """NCCL_NET_PLUGIN's value and a description of where it came from (for messages)."""
    if "NCCL_NET_PLUGIN" in environ:
        return environ["NCCL_NET_PLUGIN"], "NCCL_NET_PLUGIN"
    conf = nccl_conf_settings(environ).get("NCCL_NET_PLUGIN")
    if conf:
        return conf[0], f"NCCL_NET_PLUGIN (set in {conf[1]})"
    return None, "NCCL_NET_PLUGIN"


def plugin_request(environ: Mapping[str, str] = os.environ) -> tuple[str | None, list[str]]:
    """(requested, candidate names in NCCL's order), loading nothing: the cheap bad-input check.

    Raises PluginError when NCCL_NET_PLUGIN (environment or nccl.conf) names a missing path.
    """
    requested, what = _requested(environ)
    _check_paths(plugin_entries(requested), f"{what}={requested!r}")
    return requested, candidate_names(requested)


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
    environ: Mapping[str, str] = os.environ, *, path: str | None = None, timeout: float = 10.0
) -> PluginReport:
    """Load the plugin NCCL would load (or `path`) in a child process and report what it says.

    A crash, hang (the child's process group is killed after `timeout` s), abort or garbage
    output becomes PluginReport.error; only a missing file named by the user raises PluginError.
    """
    start = time.monotonic()
    if path is not None:
        requested, candidates, args = None, [path], [path]
        _check_paths([path], "net plugin path")
    else:
        requested, candidates = plugin_request(environ)
        args = []
        if not candidates:
            return _report(requested, candidates, {}, disabled_error(requested), start)
    state, error = _run_child(args, environ, timeout)
    return _report(requested, candidates, state, error, start)


def _report(requested, candidates, state: dict, error: str | None, start: float) -> PluginReport:
    return PluginReport(
        requested=requested,
        candidates=tuple(state.get("candidates") or candidates),
        path=state.get("path"),
        exported=tuple(state.get("exported", ())),
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
    from cordee.interconnect.child_protocol import run_python, signal_name

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
