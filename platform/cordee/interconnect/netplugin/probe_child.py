"""The net plugin probe, in the child process that may die with the plugin.

Run as `python -m cordee.interconnect.netplugin.probe_child [PATH] [--resolve-only] [--nccl LIBNCCL]
[--progress FILE]`: resolve the plugin as NCCL would (or take PATH), dlopen it RTLD_NOW|RTLD_LOCAL,
pick the newest ncclNetPlugin_vN that both cordee (abi.py) and LIBNCCL (nccl_versions.py) know,
call init / devices / getProperties / finalize, and print one JSON document (schema
cordee.netplugin/1) on stdout. The parent side is
probe.probe_plugin; the progress file tells it how far this process got if the plugin kills it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from ctypes import byref, c_char_p, c_int, c_void_p

from cordee.interconnect.nccl import RESULT_NAMES
from cordee.interconnect.netplugin import abi
from cordee.interconnect.netplugin.loadfail import load_failure
from cordee.interconnect.netplugin.logformat import format_printf
from cordee.interconnect.netplugin.nccl_versions import nccl_net_versions
from cordee.interconnect.netplugin.probe import SCHEMA
from cordee.interconnect.netplugin.resolve import candidate_names, disabled_error, nccl_conf_settings

SCANNED_VERSIONS = tuple(range(16, 0, -1))  # report every ncclNetPlugin_vN present, newest first
MAX_DEVICES = 1024  # a garbage device count must not loop for ever
RTLD_DI_LINKMAP = 2


def result_name(rc: int) -> str:
    return RESULT_NAMES.get(rc, "unknown result")


def _loaded_path(lib: ctypes.CDLL) -> str | None:
    """The file dlopen picked, the way NCCL asks for it: dlinfo(RTLD_DI_LINKMAP)->l_name."""
    for libname in (None, "libdl.so.2"):
        try:
            dlinfo = ctypes.CDLL(libname).dlinfo
        except (OSError, AttributeError):
            continue
        link_map = c_void_p()
        if dlinfo(c_void_p(lib._handle), RTLD_DI_LINKMAP, byref(link_map)) != 0 or not link_map.value:
            return None
        name = c_char_p.from_address(link_map.value + ctypes.sizeof(c_void_p)).value  # l_name
        return os.path.realpath(name.decode()) if name else None
    return None


def _span(versions) -> str:
    """ "v12..v8", "v7, v6" or "v9": a list of ABI versions, newest first, for messages."""
    versions = sorted(versions, reverse=True)
    if len(versions) > 2 and versions == list(range(versions[0], versions[-1] - 1, -1)):
        return f"v{versions[0]}..v{versions[-1]}"
    return ", ".join(f"v{v}" for v in versions) or "none"


def _has_symbol(lib: ctypes.CDLL, name: str) -> bool:
    try:
        ctypes.c_char.in_dll(lib, name)
    except ValueError:
        return False
    return True


class _Stop(Exception):
    """The probe cannot go on; the message becomes the report's error."""


class Probe:
    """Steps of the probe; each change of state is also appended to the progress file, so the
    parent still knows the phase and the log if the plugin kills this process."""

    def __init__(self, progress: str | None):
        self.fd = os.open(progress, os.O_WRONLY | os.O_APPEND) if progress else None
        self.state: dict = {"schema": SCHEMA, "log": [], "devices": [], "phase": None, "error": None}
        self.logger = abi.LOGGER(self._log)  # referenced for as long as the plugin may call it

    def _emit(self, event: dict) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(event) + "\n").encode())

    def set(self, **values) -> None:
        self.state.update(values)
        self._emit({"set": values})

    def _log(self, level, flags, file, line, fmt, *args) -> None:
        try:
            text = fmt.decode(errors="replace") if fmt else ""
            if args:
                n_int = abi.N_INT_ARGS
                text = format_printf(text, list(args[:n_int]), list(args[n_int:]))
            entry = {"level": abi.LEVEL_NAMES.get(level, str(level)), "file": abi.text(file), "line": line}
            entry["message"] = text.rstrip("\n")
            self.state["log"].append(entry)
            self._emit({"log": entry})
        except Exception:  # noqa: BLE001 - an exception must never unwind into the plugin's C frames
            pass

    def load(self, path: str | None) -> ctypes.CDLL | None:
        """dlopen the first candidate that loads, as NCCL does. None: disabled, not found, or
        every file that exists failed to load (the error says which and why)."""
        requested = os.environ.get("NCCL_NET_PLUGIN")
        candidates = [path] if path else candidate_names(requested)
        self.set(requested=None if path else requested, candidates=candidates)
        if not candidates:
            self.set(error=disabled_error(requested))
            return None
        failures = []
        for name in candidates:
            self.set(phase=f"dlopen of {name}")
            try:
                lib = ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_LOCAL)
            except OSError as exc:
                failures.append(load_failure(name, str(exc)))
                continue
            self.set(path=_loaded_path(lib) or name, phase=None)
            return lib
        unloadable = [f.describe() for f in failures if f.path is not None]
        if unloadable:
            self.set(phase=None, error="could not load " + "; ".join(unloadable))
        else:
            self.set(phase=None, not_found=True, error=f"no plugin found (tried: {', '.join(candidates)})")
        return None

    def call(self, phase: str, fn, *args) -> int:
        if not fn:
            raise _Stop(f"{phase} is a NULL function pointer")
        self.set(phase=phase)
        rc = fn(*args)
        self.set(phase=None)
        return rc

    def choose_version(self, lib: ctypes.CDLL) -> int:
        """The ABI NCCL would use (its newest among the plugin's), if cordee can read it."""
        exported = [v for v in SCANNED_VERSIONS if _has_symbol(lib, f"ncclNetPlugin_v{v}")]
        self.set(exported=exported)
        nccl = self.state.get("nccl_versions")  # None: which NCCL is not known
        seen_by_nccl = [v for v in exported if nccl is None or v in nccl]
        if exported and not seen_by_nccl:
            raise _Stop(
                f"the plugin exports {_span(exported)}, the NCCL in {self.state['nccl']} looks for "
                f"{_span(nccl)}: NCCL would not load it and would use its internal transports"
            )
        usable = [v for v in seen_by_nccl if v in abi.ABI_VERSIONS]
        if not usable:
            found = ", ".join(f"v{v}" for v in sorted(exported)) or "none"
            newest, oldest = abi.ABI_VERSIONS[0], abi.ABI_VERSIONS[-1]
            raise _Stop(f"exports no ncclNetPlugin_v{newest}..v{oldest} symbol (found: {found})")
        return usable[0]

    def run(self, lib: ctypes.CDLL) -> None:
        version = self.choose_version(lib)
        table = abi.net_table(version).in_dll(lib, f"ncclNetPlugin_v{version}")
        self.set(abi_version=version, name=abi.text(table.name))
        ctx = c_void_p()
        if version >= 11:
            config = abi.CommConfig(abi.NCCL_NET_TRAFFIC_CLASS_UNDEF)  # what NCCL passes when none is set
            rc = self.call("init", table.init, byref(ctx), 0, byref(config), self.logger, None)
        elif version == 10:
            rc = self.call("init", table.init, self.logger, None)
        else:
            rc = self.call("init", table.init, self.logger)
        self.set(init_result=rc, name=abi.text(table.name))  # some plugins set their name in init
        if rc != 0:
            raise _Stop(f"init returned {rc} ({result_name(rc)})")
        try:
            self._devices(table, version)
        finally:
            if version >= 11 and table.finalize:
                rc = self.call("finalize", table.finalize, ctx)
                if rc != 0 and not self.state["error"]:
                    self.set(error=f"finalize returned {rc} ({result_name(rc)})")

    def _devices(self, table, version: int) -> None:
        count = c_int(0)
        rc = self.call("devices", table.devices, byref(count))
        if rc != 0:
            raise _Stop(f"devices returned {rc} ({result_name(rc)})")
        if count.value <= 0:  # NCCL then disables the plugin
            raise _Stop(f"plugin reports {count.value} devices")
        for index in range(min(count.value, MAX_DEVICES)):
            props = abi.PROPERTIES[version]()
            rc = self.call(f"getProperties(dev {index})", table.getProperties, index, byref(props))
            if rc != 0:
                raise _Stop(f"getProperties(dev {index}) returned {rc} ({result_name(rc)})")
            device = abi.device_record(index, props, version)
            self.state["devices"].append(device)
            self._emit({"device": device})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else __name__}")
    parser.add_argument("path", nargs="?", help="plugin file or name (default: NCCL's resolution)")
    parser.add_argument("--resolve-only", action="store_true", help="stop after the dlopen")
    parser.add_argument("--nccl", help="the libnccl.so.2 file a job would load: use the ABI it would")
    parser.add_argument("--progress", help="append progress events (JSON lines) to this file")
    args = parser.parse_args(argv)
    out = os.dup(1)
    os.dup2(2, 1)  # whatever the plugin prints goes to stderr; stdout carries only our document
    for key, (value, _) in nccl_conf_settings(os.environ).items():
        os.environ[key] = value  # as NCCL does before it loads plugins (setenv without overwrite)
    probe = Probe(args.progress)
    if args.nccl:
        try:
            versions = nccl_net_versions(args.nccl) or None  # it names none: not known either
        except (OSError, ValueError):
            versions = None
        probe.set(nccl=args.nccl, nccl_versions=None if versions is None else list(versions))
    lib = probe.load(args.path)
    if lib is not None and not args.resolve_only:
        try:
            probe.run(lib)
        except _Stop as stop:
            probe.set(phase=None, error=str(stop))
    sys.stdout.flush()
    os.write(out, (json.dumps(probe.state) + "\n").encode())
    os._exit(0)  # the plugin's destructors and threads are not part of the probe


if __name__ == "__main__":
    sys.exit(main())
