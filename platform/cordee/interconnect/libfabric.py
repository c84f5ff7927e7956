"""ctypes binding to libfabric.so.1: version and the fi_getinfo list (provider, fabric, domain,
endpoint type, capabilities), as `fi_info` prints it.

ABI (include/rdma/fabric.h; man fabric(7), "ABI changes"): only fields that have not moved since
ABI 1.2 (libfabric 1.7) are read, and libfabric 2.x only appended fields since:
  fi_info          next, caps, mode, addr_format, ..., ep_attr, domain_attr, fabric_attr (whole struct)
  fi_fabric_attr   fabric, name, prov_name, prov_version, api_version (whole struct)
  fi_domain_attr   domain, name, 5 enums, mr_mode, 12 size_t, caps, mode (prefix; 2.x turned
                   data_progress into a union with `progress`, same place)
  fi_ep_attr       type (first field)
Names of capabilities, endpoint types and address formats come from the library itself
(fi_tostr_r), so values newer than this file print right.

fi_getinfo is called with node and service NULL: providers then describe their local interfaces
and resolve no address, so no name lookup or network traffic happens and the call cannot block
on the network (it reads /sys, getifaddrs, and dlopens DL providers). The api version passed is
the library's own fi_version(): fi_getinfo refuses a version newer than the library with
-FI_ENOSYS, and asking for the newest gives every provider the library has.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from typing import NamedTuple

from cordee.errors import CordeeError
from cordee.interconnect.libload import LibraryLocation, find_library

OVERRIDE_VAR = "CORDEE_LIBFABRIC_LIBRARY"
SONAME = "libfabric.so.1"
FI_ENODATA = 61  # fi_getinfo: no provider matched (errno ENODATA)
PROVIDER_VAR = "FI_PROVIDER"  # read once, when libfabric initialises: providers it may register
FI_MR_BASIC, FI_MR_SCALABLE = 1, 2  # enum fi_mr_mode, the two obsolete values
# enum fi_type (fabric.h) for fi_tostr_r
FI_TYPE_EP_TYPE, FI_TYPE_CAPS, FI_TYPE_ADDR_FORMAT, FI_TYPE_VERSION = 1, 2, 4, 18
_ALL_BITS = (1 << 64) - 1


class FiFabricAttr(ctypes.Structure):
    _fields_ = [
        ("fabric", ctypes.c_void_p),
        ("name", ctypes.c_char_p),
        ("prov_name", ctypes.c_void_p),  # void*: fi_freeinfo frees it, so libc must own it
        ("prov_version", ctypes.c_uint32),
        ("api_version", ctypes.c_uint32),
    ]


class FiDomainAttrPrefix(ctypes.Structure):
    _fields_ = [
        ("domain", ctypes.c_void_p),
        ("name", ctypes.c_char_p),
        ("threading", ctypes.c_int),
        ("control_progress", ctypes.c_int),
        ("data_progress", ctypes.c_int),
        ("resource_mgmt", ctypes.c_int),
        ("av_type", ctypes.c_int),
        ("mr_mode", ctypes.c_int),
        *[
            (name, ctypes.c_size_t)
            for name in (
                "mr_key_size",
                "cq_data_size",
                "cq_cnt",
                "ep_cnt",
                "tx_ctx_cnt",
                "rx_ctx_cnt",
                "max_ep_tx_ctx",
                "max_ep_rx_ctx",
                "max_ep_stx_ctx",
                "max_ep_srx_ctx",
                "cntr_cnt",
                "mr_iov_limit",
            )
        ],
        ("caps", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
    ]


class FiEpAttrPrefix(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int)]


class FiInfo(ctypes.Structure):
    pass


FiInfo._fields_ = [
    ("next", ctypes.POINTER(FiInfo)),
    ("caps", ctypes.c_uint64),
    ("mode", ctypes.c_uint64),
    ("addr_format", ctypes.c_uint32),
    ("src_addrlen", ctypes.c_size_t),
    ("dest_addrlen", ctypes.c_size_t),
    ("src_addr", ctypes.c_void_p),
    ("dest_addr", ctypes.c_void_p),
    ("handle", ctypes.c_void_p),
    ("tx_attr", ctypes.c_void_p),
    ("rx_attr", ctypes.c_void_p),
    ("ep_attr", ctypes.POINTER(FiEpAttrPrefix)),
    ("domain_attr", ctypes.POINTER(FiDomainAttrPrefix)),
    ("fabric_attr", ctypes.POINTER(FiFabricAttr)),
    ("nic", ctypes.c_void_p),
]


class LibfabricError(CordeeError):
    def __init__(self, function: str, rc: int, text: str = ""):
        self.function, self.rc, self.text = function, rc, text
        super().__init__(f"{function} failed: {rc}{' (' + text + ')' if text else ''}")


class FabricInfo(NamedTuple):
    provider: str  # "tcp", "cxi", or core;utility as "tcp;ofi_rxm"
    fabric: str
    domain: str
    ep_type: str  # "FI_EP_RDM" | "FI_EP_MSG" | "FI_EP_DGRAM" | ...
    caps: tuple[str, ...]  # ("FI_MSG", "FI_RMA", ...)
    addr_format: str  # "FI_SOCKADDR_IN", "FI_ADDR_CXI", ...
    prov_version: str  # "x.y" as fi_info prints it ("117.0" for a built-in provider of 1.17)
    api_version: str  # "x.y"

    def as_dict(self) -> dict:
        d = self._asdict()
        d["caps"] = list(self.caps)
        return d


def find_libfabric(environ=os.environ) -> LibraryLocation:
    return find_library(SONAME, override_var=OVERRIDE_VAR, environ=environ)


def provider_filter(value: str | None) -> tuple[bool, list[str]]:
    """FI_PROVIDER as libfabric reads it (ofi_create_filter): (negated, names). "a,b" allows only
    core providers a and b (utility providers such as ofi_rxm still layer over them); "^a,b"
    excludes them. Unset or empty: (False, []), every provider."""
    if not value:
        return False, []
    negated = value.startswith("^")
    return negated, [name for name in value[negated:].split(",") if name]


def version_str(v: int) -> str:
    return f"{v >> 16}.{v & 0xFFFF}"


class Libfabric:
    def __init__(self, location: LibraryLocation | None = None):
        self.location = location or find_libfabric()
        self.path = self.location.path
        try:
            self._lib = ctypes.CDLL(self.path)
        except OSError as e:
            raise CordeeError(f"cannot load libfabric from {self.path}: {e}") from None
        lib = self._lib
        lib.fi_version.argtypes, lib.fi_version.restype = [], ctypes.c_uint32
        lib.fi_getinfo.restype = ctypes.c_int
        lib.fi_getinfo.argtypes = [
            ctypes.c_uint32,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_uint64,
            ctypes.POINTER(FiInfo),
            ctypes.POINTER(ctypes.POINTER(FiInfo)),
        ]
        lib.fi_freeinfo.argtypes, lib.fi_freeinfo.restype = [ctypes.POINTER(FiInfo)], None
        lib.fi_dupinfo.argtypes, lib.fi_dupinfo.restype = [ctypes.POINTER(FiInfo)], ctypes.POINTER(FiInfo)
        lib.fi_strerror.argtypes, lib.fi_strerror.restype = [ctypes.c_int], ctypes.c_char_p
        # fi_tostr_r: ABI 1.4 (libfabric 1.12); older ones have only fi_tostr, not reentrant
        self._tostr_r = getattr(lib, "fi_tostr_r", None)
        if self._tostr_r is not None:
            self._tostr_r.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int]
            self._tostr_r.restype = ctypes.c_char_p
        lib.fi_tostr.argtypes, lib.fi_tostr.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_char_p
        self._tostr_lock = threading.Lock()
        self._libc = ctypes.CDLL(None)
        self._libc.strdup.argtypes, self._libc.strdup.restype = [ctypes.c_char_p], ctypes.c_void_p
        self.api_version_code = lib.fi_version()
        self.api_version = version_str(self.api_version_code)
        # the release, as `fi_info --version` prints it: fi_version() has only the API's major.minor
        self.version = self._tostr(ctypes.c_uint32(self.api_version_code), FI_TYPE_VERSION).strip()

    def _tostr(self, value, fi_type: int) -> str:
        """libfabric's own name(s) for a value: "FI_EP_RDM", "FI_MSG | FI_RMA", "1.17.0"."""
        if self._tostr_r is not None:
            buf = ctypes.create_string_buffer(4096)
            out = self._tostr_r(buf, len(buf), ctypes.byref(value), fi_type)
        else:
            with self._tostr_lock:
                out = self._lib.fi_tostr(ctypes.byref(value), fi_type)
        return out.decode(errors="replace") if out else ""

    def strerror(self, rc: int) -> str:
        text = self._lib.fi_strerror(abs(rc))
        return text.decode(errors="replace") if text else ""

    def getinfo(self, provider: str | None = None, *, api_version: int | None = None) -> list[FabricInfo]:
        """Every fi_info the library returns, as `fi_info` (no provider) or `fi_info -p PROVIDER`
        lists them. The filter is libfabric's own: "tcp" also matches the layered "tcp;ofi_rxm".
        A provider that matches nothing (unknown, or no hardware) gives []."""
        version = api_version or self.api_version_code
        hints = self._hints(provider) if provider else None
        head = ctypes.POINTER(FiInfo)()
        try:
            rc = self._lib.fi_getinfo(version, None, None, 0, hints, ctypes.byref(head))
        finally:
            if hints:
                self._lib.fi_freeinfo(hints)
        if rc == -FI_ENODATA:
            return []
        if rc != 0:
            raise LibfabricError("fi_getinfo", rc, self.strerror(rc))
        try:
            return self._collect(head)
        finally:
            self._lib.fi_freeinfo(head)

    def _hints(self, provider: str):
        """Hints as `fi_info -p` builds them: any mode and any non-obsolete MR mode is acceptable
        to us (we only list), so providers that require some are not filtered out."""
        hints = self._lib.fi_dupinfo(None)  # fi_allocinfo() is an inline macro over this
        if not hints:
            raise LibfabricError("fi_dupinfo", -12, "out of memory")
        info = hints.contents
        info.mode = _ALL_BITS
        info.domain_attr.contents.mode = _ALL_BITS
        info.domain_attr.contents.mr_mode = ~(FI_MR_BASIC | FI_MR_SCALABLE)
        # libc-owned copy: fi_freeinfo(hints) frees prov_name
        info.fabric_attr.contents.prov_name = self._libc.strdup(provider.encode())
        return hints

    def _collect(self, head) -> list[FabricInfo]:
        out = []
        node = head
        while node:
            info = node.contents
            fabric = info.fabric_attr.contents if info.fabric_attr else None
            domain = info.domain_attr.contents if info.domain_attr else None
            ep_type = info.ep_attr.contents.type if info.ep_attr else 0
            caps = self._tostr(ctypes.c_uint64(info.caps), FI_TYPE_CAPS)
            prov = ctypes.string_at(fabric.prov_name).decode() if fabric and fabric.prov_name else ""
            out.append(
                FabricInfo(
                    provider=prov,
                    fabric=_text(fabric.name) if fabric else "",
                    domain=_text(domain.name) if domain else "",
                    ep_type=self._tostr(ctypes.c_int(ep_type), FI_TYPE_EP_TYPE),
                    caps=tuple(c for c in re.split(r"[\s|,]+", caps) if c),  # 1.17: ", ", older: " | "
                    addr_format=self._tostr(ctypes.c_uint32(info.addr_format), FI_TYPE_ADDR_FORMAT),
                    prov_version=version_str(fabric.prov_version) if fabric else "",
                    api_version=version_str(fabric.api_version) if fabric else "",
                )
            )
            node = info.next
        return out


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value else ""
