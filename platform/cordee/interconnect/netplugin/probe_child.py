"""ctypes mirror of the NCCL net plugin ABI (ncclNet_v8 .. ncclNet_v12) and the in-child probe.

Run as `python -m cordee.interconnect.netplugin.probe_child [PATH] [--resolve-only] [--progress FILE]`:
resolve the plugin as NCCL would (or take PATH), dlopen it RTLD_NOW|RTLD_LOCAL, pick the
newest ncclNetPlugin_vN cordee understands, call init / devices / getProperties / finalize,
and print one JSON document (schema cordee.netplugin/1) on stdout. Meant to run in a child
process (cordee.interconnect.netplugin.resolve.probe_plugin): a plugin may crash or hang here.

Layouts follow NCCL's src/include/plugin/net/net_v8.h .. net_v12.h (LP64). The logger is
variadic in C; ctypes callbacks are not. On x86_64 and aarch64 (Linux) variadic arguments
travel exactly like ordinary ones (integers in the free argument registers then 8-byte stack
slots, doubles in the 8 vector registers), so the callback declares 16 extra integer and 8
double parameters and formats the printf string with them. Reading unused slots only reads
the caller's stack frame. More than 16 integer or 8 double arguments, %n, %L and unknown
conversions leave the message as the raw format string; on other machines it is always raw.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import struct
import sys
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int16,
    c_size_t,
    c_uint64,
    c_ulong,
    c_void_p,
)

from cordee.interconnect.netplugin.logformat import format_printf
from cordee.interconnect.netplugin.resolve import (
    ABI_VERSIONS,
    SCHEMA,
    candidate_names,
    disabled_error,
    nccl_conf_settings,
    ptr_support_names,
    result_name,
)

SCANNED_VERSIONS = tuple(range(16, 0, -1))  # report every ncclNetPlugin_vN present, newest first
MAX_DEVICES = 1024  # a garbage device count must not loop for ever
LEVEL_NAMES = {0: "NONE", 1: "VERSION", 2: "WARN", 3: "INFO", 4: "ABORT", 5: "TRACE"}
NCCL_NET_TRAFFIC_CLASS_UNDEF = -1
RTLD_DI_LINKMAP = 2


class VDeviceProps4(Structure):  # v9 .. v11: NCCL_NET_MAX_DEVS_PER_NIC = 4
    _fields_ = [("ndevs", c_int), ("devs", c_int * 4)]


class VDeviceProps8(Structure):  # v12
    _fields_ = [("ndevs", c_int), ("devs", c_int * 8)]


_HEAD = [("name", c_char_p), ("pciPath", c_char_p), ("guid", c_uint64), ("ptrSupport", c_int)]
_BODY = [("speed", c_int), ("port", c_int), ("latency", c_float), ("maxComms", c_int)]
_BODY += [("maxRecvs", c_int), ("netDeviceType", c_int), ("netDeviceVersion", c_int)]


class PropertiesV8(Structure):
    _fields_ = _HEAD + [("regIsGlobal", c_int)] + _BODY


class PropertiesV9(Structure):  # also v10
    _fields_ = _HEAD + [("regIsGlobal", c_int), ("forceFlush", c_int)] + _BODY
    _fields_ += [("vProps", VDeviceProps4), ("maxP2pBytes", c_size_t), ("maxCollBytes", c_size_t)]


class PropertiesV11(Structure):
    _fields_ = PropertiesV9._fields_ + [("maxMultiRequestSize", c_int)]


class PropertiesV12(Structure):
    _fields_ = _HEAD + [("regIsGlobal", c_int), ("forceFlush", c_int)] + _BODY
    _fields_ += [("vProps", VDeviceProps8), ("maxP2pBytes", c_size_t), ("maxCollBytes", c_size_t)]
    _fields_ += [("maxMultiRequestSize", c_int), ("railId", c_int16), ("planeId", c_int16)]


class CommConfig(Structure):  # ncclNetCommConfig_v10/v11/v12_t
    _fields_ = [("trafficClass", c_int)]


PROPERTIES = {8: PropertiesV8, 9: PropertiesV9, 10: PropertiesV9, 11: PropertiesV11, 12: PropertiesV12}

_FORMATS_VARARGS = os.uname().machine in ("x86_64", "aarch64") and ctypes.sizeof(c_void_p) == 8
_N_INT, _N_DOUBLE = (16, 8) if _FORMATS_VARARGS else (0, 0)
LOGGER = ctypes.CFUNCTYPE(
    None, c_int, c_ulong, c_char_p, c_int, c_char_p, *([c_uint64] * _N_INT), *([c_double] * _N_DOUBLE)
)

# slots after name, init, devices, getProperties; v8 has 19 in all, v9/v10 20, v11/v12 22
_SLOTS_V8 = "listen connect accept regMr regMrDmaBuf deregMr isend irecv iflush test closeSend closeRecv"
_SLOTS_V8 = (_SLOTS_V8 + " closeListen getDeviceMr irecvConsumed").split()


def _init_type(version: int):
    if version <= 9:
        return ctypes.CFUNCTYPE(c_int, LOGGER)
    if version == 10:
        return ctypes.CFUNCTYPE(c_int, LOGGER, c_void_p)  # (logFn, profilerCallback)
    return ctypes.CFUNCTYPE(c_int, POINTER(c_void_p), c_uint64, POINTER(CommConfig), LOGGER, c_void_p)


def net_table(version: int) -> type[Structure]:
    """The ncclNet_vN_t function table as a ctypes Structure."""
    fields = [
        ("name", c_char_p),
        ("init", _init_type(version)),
        ("devices", ctypes.CFUNCTYPE(c_int, POINTER(c_int))),
        ("getProperties", ctypes.CFUNCTYPE(c_int, c_int, POINTER(PROPERTIES[version]))),
    ] + [(slot, c_void_p) for slot in _SLOTS_V8]
    if version >= 9:
        fields.append(("makeVDevice", c_void_p))
    if version >= 11:
        fields += [("finalize", ctypes.CFUNCTYPE(c_int, c_void_p)), ("setNetAttr", c_void_p)]
    return type(f"NetV{version}", (Structure,), {"_fields_": fields})


# --- the probe -----------------------------------------------------------------------------------


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


def _float32(value: float) -> float:
    """The shortest decimal that is the same float32 (1.25, not 1.2500000476837158)."""
    packed = struct.pack("f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("f", short) == packed:
            return short
    return value


def device_record(index: int, props: Structure, version: int) -> dict:
    """getProperties' struct as a NetDevice dict (fields absent in this version are None)."""
    v9 = version >= 9
    vdevs = None
    if v9:
        cap = len(props.vProps.devs)
        vdevs = list(props.vProps.devs[: max(0, min(props.vProps.ndevs, cap))])
    return {
        "index": index,
        "name": _text(props.name),
        "pci_path": _text(props.pciPath),
        "guid": props.guid,
        "ptr_support": list(ptr_support_names(props.ptrSupport)),
        "reg_is_global": bool(props.regIsGlobal),
        "force_flush": bool(props.forceFlush) if v9 else None,
        "speed_mbps": props.speed,
        "port": props.port,
        "latency_us": _float32(props.latency),
        "max_comms": props.maxComms,
        "max_recvs": props.maxRecvs,
        "net_device_type": props.netDeviceType,
        "net_device_version": props.netDeviceVersion,
        "vdevs": vdevs,
        "max_p2p_bytes": props.maxP2pBytes if v9 else None,
        "max_coll_bytes": props.maxCollBytes if v9 else None,
        "max_multi_request_size": props.maxMultiRequestSize if version >= 11 else None,
        "rail_id": props.railId if version >= 12 else None,
        "plane_id": props.planeId if version >= 12 else None,
    }


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


class Probe:
    """Steps of the probe; each change of state is also appended to the progress file, so the
    parent still knows the phase and the log if the plugin kills this process."""

    def __init__(self, progress: str | None):
        self.fd = os.open(progress, os.O_WRONLY | os.O_APPEND) if progress else None
        self.state: dict = {"schema": SCHEMA, "log": [], "devices": [], "phase": None, "error": None}
        self.logger = LOGGER(self._log)  # referenced for as long as the plugin may call it

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
                text = format_printf(text, list(args[:_N_INT]), list(args[_N_INT:]))
            entry = {"level": LEVEL_NAMES.get(level, str(level)), "file": _text(file), "line": line}
            entry["message"] = text.rstrip("\n")
            self.state["log"].append(entry)
            self._emit({"log": entry})
        except Exception:  # noqa: BLE001 - an exception must never unwind into the plugin's C frames
            pass

    def load(self, path: str | None) -> ctypes.CDLL | None:
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
                failures.append((name, str(exc)))
                continue
            self.set(path=_loaded_path(lib) or name, phase=None)
            return lib
        missing = [n for n, e in failures if "No such file or directory" in e]
        other = [f"{n}: {e}" for n, e in failures if "No such file or directory" not in e]
        if other:
            error = "could not load " + "; ".join(other)
        else:
            error = f"no plugin found (tried: {', '.join(missing)})"
        self.set(phase=None, error=error)
        return None

    def call(self, phase: str, fn, *args) -> int:
        if not fn:
            raise _Stop(f"{phase} is a NULL function pointer")
        self.set(phase=phase)
        rc = fn(*args)
        self.set(phase=None)
        return rc

    def run(self, lib: ctypes.CDLL) -> None:
        exported = [v for v in SCANNED_VERSIONS if _has_symbol(lib, f"ncclNetPlugin_v{v}")]
        usable = [v for v in exported if v in ABI_VERSIONS]
        self.set(exported=exported)
        if not usable:
            found = ", ".join(f"v{v}" for v in sorted(exported)) or "none"
            newest, oldest = ABI_VERSIONS[0], ABI_VERSIONS[-1]
            raise _Stop(f"exports no ncclNetPlugin_v{newest}..v{oldest} symbol (found: {found})")
        version = usable[0]
        table = net_table(version).in_dll(lib, f"ncclNetPlugin_v{version}")
        self.set(abi_version=version, name=_text(table.name))
        ctx = c_void_p()
        if version >= 11:
            config = CommConfig(NCCL_NET_TRAFFIC_CLASS_UNDEF)  # what NCCL passes when none is set
            rc = self.call("init", table.init, byref(ctx), 0, byref(config), self.logger, None)
        elif version == 10:
            rc = self.call("init", table.init, self.logger, None)
        else:
            rc = self.call("init", table.init, self.logger)
        self.set(init_result=rc, name=_text(table.name))  # some plugins set their name in init
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
            props = PROPERTIES[version]()
            rc = self.call(f"getProperties(dev {index})", table.getProperties, index, byref(props))
            if rc != 0:
                raise _Stop(f"getProperties(dev {index}) returned {rc} ({result_name(rc)})")
            device = device_record(index, props, version)
            self.state["devices"].append(device)
            self._emit({"device": device})


class _Stop(Exception):
    """The probe cannot go on; the message becomes the report's error."""


def _has_symbol(lib: ctypes.CDLL, name: str) -> bool:
    try:
        ctypes.c_char.in_dll(lib, name)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else __name__}")
    parser.add_argument("path", nargs="?", help="plugin file or name (default: NCCL's resolution)")
    parser.add_argument("--resolve-only", action="store_true", help="stop after the dlopen")
    parser.add_argument("--progress", help="append progress events (JSON lines) to this file")
    args = parser.parse_args(argv)
    out = os.dup(1)
    os.dup2(2, 1)  # whatever the plugin prints goes to stderr; stdout carries only our document
    for key, (value, _) in nccl_conf_settings(os.environ).items():
        os.environ[key] = value  # as NCCL does before it loads plugins (setenv without overwrite)
    probe = Probe(args.progress)
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
