"""ctypes mirror of the NCCL net plugin ABI, ncclNet_v8 .. ncclNet_v12 (LP64).

Layouts follow NCCL's src/include/plugin/net/net_v8.h .. net_v12.h: the properties struct of
each version, the communicator config (v10+), the function table, and the logger type. The
logger is variadic in C; ctypes callbacks are not. On x86_64 and aarch64 (Linux) variadic
arguments travel exactly like ordinary ones (integers in the free argument registers then 8-byte
stack slots, doubles in the 8 vector registers), so the callback declares 16 extra integer and 8
double parameters and logformat.py formats the printf string with them. Reading unused slots
only reads the caller's stack frame. On other machines the message stays the raw format string.
"""

from __future__ import annotations

import ctypes
import os
import struct
from ctypes import POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int16, c_size_t, c_uint64

ABI_VERSIONS = (12, 11, 10, 9, 8)  # newest first; what cordee understands
PTR_BITS = (("host", 0x1), ("cuda", 0x2), ("dmabuf", 0x4))  # NCCL_PTR_HOST, _CUDA, _DMABUF
LEVEL_NAMES = {0: "NONE", 1: "VERSION", 2: "WARN", 3: "INFO", 4: "ABORT", 5: "TRACE"}  # ncclDebugLogLevel
NCCL_NET_TRAFFIC_CLASS_UNDEF = -1


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

FORMATS_VARARGS = os.uname().machine in ("x86_64", "aarch64") and ctypes.sizeof(ctypes.c_void_p) == 8
N_INT_ARGS, N_DOUBLE_ARGS = (16, 8) if FORMATS_VARARGS else (0, 0)
# void (*)(ncclDebugLogLevel level, unsigned long flags, const char* file, int line, const char* fmt, ...)
LOGGER = ctypes.CFUNCTYPE(
    None,
    c_int,
    ctypes.c_ulong,
    c_char_p,
    c_int,
    c_char_p,
    *([c_uint64] * N_INT_ARGS),
    *([c_double] * N_DOUBLE_ARGS),
)

# slots after name, init, devices, getProperties; v8 has 19 in all, v9/v10 20, v11/v12 22
_SLOTS_V8 = "listen connect accept regMr regMrDmaBuf deregMr isend irecv iflush test closeSend closeRecv"
_SLOTS_V8 = (_SLOTS_V8 + " closeListen getDeviceMr irecvConsumed").split()


def _init_type(version: int):
    if version <= 9:
        return ctypes.CFUNCTYPE(c_int, LOGGER)
    if version == 10:
        return ctypes.CFUNCTYPE(c_int, LOGGER, ctypes.c_void_p)  # (logFn, profilerCallback)
    # (ctx, commId, config, logFn, profilerCallback)
    return ctypes.CFUNCTYPE(
        c_int, POINTER(ctypes.c_void_p), c_uint64, POINTER(CommConfig), LOGGER, ctypes.c_void_p
    )


def net_table(version: int) -> type[Structure]:
    """The ncclNet_vN_t function table as a ctypes Structure."""
    fields = [
        ("name", c_char_p),
        ("init", _init_type(version)),
        ("devices", ctypes.CFUNCTYPE(c_int, POINTER(c_int))),
        ("getProperties", ctypes.CFUNCTYPE(c_int, c_int, POINTER(PROPERTIES[version]))),
    ] + [(slot, ctypes.c_void_p) for slot in _SLOTS_V8]
    if version >= 9:
        fields.append(("makeVDevice", ctypes.c_void_p))
    if version >= 11:
        fields += [("finalize", ctypes.CFUNCTYPE(c_int, ctypes.c_void_p)), ("setNetAttr", ctypes.c_void_p)]
    return type(f"NetV{version}", (Structure,), {"_fields_": fields})


def ptr_support_names(bits: int) -> tuple[str, ...]:
    return tuple(name for name, bit in PTR_BITS if bits & bit)


def text(raw: bytes | None) -> str | None:
    """A C string from the plugin, decoded whatever its bytes."""
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
        "name": text(props.name),
        "pci_path": text(props.pciPath),
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
