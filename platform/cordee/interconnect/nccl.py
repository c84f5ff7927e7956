"""ctypes binding to libnccl.so.2: version, error strings, unique id, communicators and all_reduce.

Found the way a job finds it (cordee.interconnect.libload): CORDEE_NCCL_LIBRARY, then the NCCL
wheels torch loads (nvidia-nccl-cu12: nvidia/nccl/lib; CUDA 13 wheels also use nvidia/cu13/lib),
then the dynamic linker's paths. Prototypes and enum values follow NVIDIA/nccl src/nccl.h.in.
No GPU is needed to load the library, read its version or make a unique id.

Communicator init blocks until every rank has joined. With `timeout_s` the communicator is made
non-blocking (ncclConfig_t.blocking = 0) and polled with ncclCommGetAsyncError up to a deadline,
then aborted; without it, the caller bounds the wait (cordee runs ranks as processes with timeouts).
"""

from __future__ import annotations

import ctypes
import os
import time

from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError
from cordee.interconnect.libload import LibraryLocation, find_library

OVERRIDE_VAR = "CORDEE_NCCL_LIBRARY"
SONAME = "libnccl.so.2"
WHEEL_GLOBS = (
    "nvidia/nccl/lib/" + SONAME,  # nvidia-nccl-cu12 (and cu13 releases that kept this layout)
    "nvidia/cu13/lib/" + SONAME,  # CUDA 13 wheels' shared layout
    "nvidia/cu12/lib/" + SONAME,
)
UNIQUE_ID_BYTES = 128

# ncclResult_t
SUCCESS, IN_PROGRESS, TIMEOUT = 0, 7, 8
RESULT_NAMES = {
    0: "ncclSuccess",
    1: "ncclUnhandledCudaError",
    2: "ncclSystemError",
    3: "ncclInternalError",
    4: "ncclInvalidArgument",
    5: "ncclInvalidUsage",
    6: "ncclRemoteError",
    7: "ncclInProgress",
    8: "ncclTimeout",
}
# ncclDataType_t value and element size in bytes
DTYPES = {
    "int8": (0, 1),
    "uint8": (1, 1),
    "int32": (2, 4),
    "uint32": (3, 4),
    "int64": (4, 8),
    "uint64": (5, 8),
    "float16": (6, 2),
    "float32": (7, 4),
    "float64": (8, 8),
    "bfloat16": (9, 2),
    "float8e4m3": (10, 1),  # NCCL >= 2.24
    "float8e5m2": (11, 1),
}
OPS = {"sum": 0, "prod": 1, "max": 2, "min": 3, "avg": 4}  # ncclRedOp_t; avg needs NCCL >= 2.10

_comm_t = ctypes.c_void_p
_p_int = ctypes.POINTER(ctypes.c_int)


class UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * UNIQUE_ID_BYTES)]


class _ConfigV21700(ctypes.Structure):
    """The ncclConfig_t prefix of NCCL 2.17. NCCL copies `size` bytes and gives every field a
    later version added its default, so this prefix stays valid with newer libraries."""

    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint),
        ("version", ctypes.c_uint),
        ("blocking", ctypes.c_int),
        ("cgaClusterSize", ctypes.c_int),
        ("minCTAs", ctypes.c_int),
        ("maxCTAs", ctypes.c_int),
        ("netName", ctypes.c_char_p),
    ]


_CONFIG_MAGIC = 0xCAFEBEEF
_CONFIG_UNDEF_INT = -(2**31)  # NCCL_CONFIG_UNDEF_INT = INT_MIN

_PROTOTYPES = {
    "ncclGetVersion": [_p_int],
    "ncclGetUniqueId": [ctypes.POINTER(UniqueId)],
    "ncclCommInitRank": [ctypes.POINTER(_comm_t), ctypes.c_int, UniqueId, ctypes.c_int],
    "ncclCommInitRankConfig": [
        ctypes.POINTER(_comm_t),
        ctypes.c_int,
        UniqueId,
        ctypes.c_int,
        ctypes.POINTER(_ConfigV21700),
    ],
    "ncclCommGetAsyncError": [_comm_t, _p_int],
    "ncclCommCount": [_comm_t, _p_int],
    "ncclCommCuDevice": [_comm_t, _p_int],
    "ncclCommUserRank": [_comm_t, _p_int],
    "ncclCommFinalize": [_comm_t],
    "ncclCommDestroy": [_comm_t],
    "ncclCommAbort": [_comm_t],
    "ncclAllReduce": [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        _comm_t,
        ctypes.c_void_p,
    ],
}


# absent from NCCL < 2.14 (checked where used)
_SINCE_2_14 = ("ncclCommInitRankConfig", "ncclCommFinalize")


class NcclError(CordeeError):
    """An NCCL call failed: the function, its ncclResult_t, NCCL's text for it and its last error."""

    def __init__(self, function: str, rc: int, text: str = "", last_error: str = ""):
        self.function, self.rc, self.text, self.last_error = function, rc, text, last_error
        name = RESULT_NAMES.get(rc, "ncclResult_t")
        detail = f": {text}" if text else ""
        detail += f" [last error: {last_error}]" if last_error else ""
        super().__init__(f"{function} failed: {name} ({rc}){detail}")


class NcclTimeout(NcclError):
    exit_code = EXIT_UNKNOWN


def decode_version(code: int) -> tuple[int, int, int]:
    """NCCL_VERSION_CODE -> (major, minor, patch): X*10000+Y*100+Z since 2.9, X*1000+Y*100+Z before."""
    if code >= 10000:
        return code // 10000, code % 10000 // 100, code % 100
    return code // 1000, code % 1000 // 100, code % 100


def find_libnccl(environ=os.environ) -> LibraryLocation:
    return find_library(SONAME, override_var=OVERRIDE_VAR, wheel_globs=WHEEL_GLOBS, environ=environ)


class Nccl:
    def __init__(self, location: LibraryLocation | None = None):
        self.location = location or find_libnccl()
        self.path = self.location.path
        try:
            self._lib = ctypes.CDLL(self.path)
        except OSError as e:
            raise InputError(f"cannot load NCCL from {self.path}: {e}") from None
        for name, argtypes in _PROTOTYPES.items():
            fn = getattr(self._lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
            elif name not in _SINCE_2_14:
                raise InputError(f"{self.path}: no symbol {name}; not an NCCL library ({SONAME})")
        get_error_string = self._lib.ncclGetErrorString
        get_error_string.argtypes, get_error_string.restype = [ctypes.c_int], ctypes.c_char_p
        self._last_error = getattr(self._lib, "ncclGetLastError", None)  # NCCL >= 2.13
        if self._last_error is not None:
            self._last_error.argtypes, self._last_error.restype = [_comm_t], ctypes.c_char_p
        code = ctypes.c_int()
        self.check("ncclGetVersion", self._lib.ncclGetVersion(ctypes.byref(code)))
        self.version_code = code.value
        self.version = decode_version(code.value)

    def error_string(self, rc: int) -> str:
        text = self._lib.ncclGetErrorString(rc)
        return text.decode(errors="replace") if text else ""

    def last_error(self, comm: int | None = None) -> str:
        if self._last_error is None:
            return ""
        text = self._last_error(comm)
        return text.decode(errors="replace") if text else ""

    def check(self, function: str, rc: int, comm: int | None = None) -> None:
        if rc != SUCCESS:
            raise NcclError(function, rc, self.error_string(rc), self.last_error(comm))

    def unique_id(self) -> bytes:
        """A fresh id (128 bytes) for ncclCommInitRank; the process that made it hosts NCCL's
        bootstrap root, so it must live until every rank has initialized."""
        uid = UniqueId()
        self.check("ncclGetUniqueId", self._lib.ncclGetUniqueId(ctypes.byref(uid)))
        return ctypes.string_at(ctypes.addressof(uid), UNIQUE_ID_BYTES)

    def comm_init_rank(
        self, nranks: int, unique_id: bytes, rank: int, *, timeout_s: float | None = None
    ) -> Communicator:
        """Join communicator `unique_id` as `rank` of `nranks` on the current CUDA device."""
        if len(unique_id) != UNIQUE_ID_BYTES:
            raise InputError(f"NCCL unique id: {len(unique_id)} bytes, must be {UNIQUE_ID_BYTES}")
        if not 0 <= rank < nranks:
            raise InputError(f"NCCL rank {rank}: must be in 0..{nranks - 1} (nranks {nranks})")
        uid = UniqueId.from_buffer_copy(unique_id)
        comm = _comm_t()
        if timeout_s is None:
            self.check("ncclCommInitRank", self._lib.ncclCommInitRank(ctypes.byref(comm), nranks, uid, rank))
            return Communicator(self, comm.value, timeout_s=None)
        if getattr(self._lib, "ncclCommInitRankConfig", None) is None:
            raise InputError(f"NCCL {'.'.join(map(str, self.version))} has no ncclCommInitRankConfig (2.14+)")
        config = _ConfigV21700(
            ctypes.sizeof(_ConfigV21700), _CONFIG_MAGIC, 21700, 0, *[_CONFIG_UNDEF_INT] * 3, None
        )
        rc = self._lib.ncclCommInitRankConfig(ctypes.byref(comm), nranks, uid, rank, ctypes.byref(config))
        if rc not in (SUCCESS, IN_PROGRESS):
            error = NcclError("ncclCommInitRankConfig", rc, self.error_string(rc), self.last_error())
            if comm.value:
                self._lib.ncclCommAbort(comm)
            raise error
        communicator = Communicator(self, comm.value, timeout_s=timeout_s)
        communicator._config = config  # init goes on in NCCL's thread: keep what it was given alive
        try:
            communicator.wait("ncclCommInitRankConfig", timeout_s)
        except NcclError:
            communicator.abort()  # frees what init allocated; a timeout has aborted already
            raise
        return communicator


class Communicator:
    """One rank's ncclComm_t. Use as a context manager: destroyed on success, aborted on error."""

    def __init__(self, nccl: Nccl, handle: int, *, timeout_s: float | None):
        self._nccl, self.handle, self.timeout_s = nccl, handle, timeout_s
        self.nonblocking = timeout_s is not None

    def _query(self, function: str) -> int:
        out = ctypes.c_int()
        self._nccl.check(
            function, getattr(self._nccl._lib, function)(self.handle, ctypes.byref(out)), self.handle
        )
        return out.value

    @property
    def count(self) -> int:
        return self._query("ncclCommCount")

    @property
    def cu_device(self) -> int:
        return self._query("ncclCommCuDevice")

    @property
    def user_rank(self) -> int:
        return self._query("ncclCommUserRank")

    def async_error(self) -> int:
        return self._query("ncclCommGetAsyncError")

    def wait(self, what: str, timeout_s: float | None) -> None:
        """Poll a non-blocking communicator until `what` is done; abort it past the deadline."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 1e9)
        spins = 0
        while (state := self.async_error()) == IN_PROGRESS:
            if time.monotonic() > deadline:
                self.abort()
                raise NcclTimeout(what, TIMEOUT, f"not finished after {timeout_s:g} s; communicator aborted")
            spins += 1
            if spins > 100:
                time.sleep(min(1e-3, 1e-5 * spins))
        self._nccl.check(what, state, self.handle)

    def all_reduce(
        self,
        send_ptr: int,
        recv_ptr: int,
        count: int,
        dtype: str = "float32",
        op: str = "sum",
        stream: int = 0,
    ) -> None:
        """Enqueue an all_reduce of `count` elements on `stream` (device pointers as ints;
        send_ptr == recv_ptr is in place). Returns once enqueued, as NCCL does."""
        if dtype not in DTYPES:
            raise InputError(f"all_reduce dtype {dtype!r}: must be one of {', '.join(DTYPES)}")
        if op not in OPS:
            raise InputError(f"all_reduce op {op!r}: must be one of {', '.join(OPS)}")
        rc = self._nccl._lib.ncclAllReduce(
            send_ptr, recv_ptr, count, DTYPES[dtype][0], OPS[op], self.handle, stream or None
        )
        if rc == IN_PROGRESS and self.nonblocking:
            self.wait("ncclAllReduce", self.timeout_s)
        else:
            self._nccl.check("ncclAllReduce", rc, self.handle)

    def destroy(self) -> None:
        if not self.handle:
            return
        if self.nonblocking and getattr(self._nccl._lib, "ncclCommFinalize", None) is not None:
            rc = self._nccl._lib.ncclCommFinalize(self.handle)
            if rc == IN_PROGRESS:
                self.wait("ncclCommFinalize", self.timeout_s)
            else:
                self._nccl.check("ncclCommFinalize", rc, self.handle)
        handle, self.handle = self.handle, None
        self._nccl.check("ncclCommDestroy", self._nccl._lib.ncclCommDestroy(handle))

    def abort(self) -> None:
        if self.handle:
            handle, self.handle = self.handle, None
            self._nccl._lib.ncclCommAbort(handle)

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.destroy()
        else:
            self.abort()
