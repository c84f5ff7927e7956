"""The few CUDA driver API calls cordee needs to run a collective without torch: device memory,
a stream, events. Through `libcuda.so.1`, which comes with the NVIDIA driver (libcudart does not
always: containers often have none, or one that does not match).

Signatures and versioned symbol names follow cuda.h (CUDA 13.0): where the header maps a name to
`NAME_v2`, that is the symbol loaded; the driver keeps exporting it for every later release.
Waiting is done by polling cuStreamQuery / cuEventQuery with a deadline, so no wait can hang.
"""

from __future__ import annotations

import ctypes
import os
import time

from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError

OVERRIDE_VAR = "CORDEE_CUDA_DRIVER_LIBRARY"
SONAME = "libcuda.so.1"
CUDA_SUCCESS = 0
CUDA_ERROR_NOT_READY = 600
CU_STREAM_NON_BLOCKING = 1
CU_EVENT_DEFAULT = 0
DEFAULT_TIMEOUT_S = 120.0

CUresult = ctypes.c_int
CUdevice = ctypes.c_int
CUdeviceptr = ctypes.c_uint64  # unsigned long long on every 64-bit platform
_p = ctypes.c_void_p  # CUcontext, CUstream, CUevent: opaque pointers

# name in cuda.h -> (symbol, argtypes)
_PROTOTYPES = {
    "cuInit": ("cuInit", [ctypes.c_uint]),
    "cuDriverGetVersion": ("cuDriverGetVersion", [ctypes.POINTER(ctypes.c_int)]),
    "cuDeviceGetCount": ("cuDeviceGetCount", [ctypes.POINTER(ctypes.c_int)]),
    "cuDeviceGet": ("cuDeviceGet", [ctypes.POINTER(CUdevice), ctypes.c_int]),
    "cuDeviceGetPCIBusId": ("cuDeviceGetPCIBusId", [ctypes.c_char_p, ctypes.c_int, CUdevice]),
    "cuDevicePrimaryCtxRetain": ("cuDevicePrimaryCtxRetain", [ctypes.POINTER(_p), CUdevice]),
    "cuDevicePrimaryCtxRelease": ("cuDevicePrimaryCtxRelease_v2", [CUdevice]),
    "cuCtxSetCurrent": ("cuCtxSetCurrent", [_p]),
    "cuMemAlloc": ("cuMemAlloc_v2", [ctypes.POINTER(CUdeviceptr), ctypes.c_size_t]),
    "cuMemFree": ("cuMemFree_v2", [CUdeviceptr]),
    "cuMemcpyHtoD": ("cuMemcpyHtoD_v2", [CUdeviceptr, _p, ctypes.c_size_t]),
    "cuMemcpyDtoH": ("cuMemcpyDtoH_v2", [_p, CUdeviceptr, ctypes.c_size_t]),
    "cuMemsetD32": ("cuMemsetD32_v2", [CUdeviceptr, ctypes.c_uint, ctypes.c_size_t]),
    "cuStreamCreate": ("cuStreamCreate", [ctypes.POINTER(_p), ctypes.c_uint]),
    "cuStreamQuery": ("cuStreamQuery", [_p]),
    "cuStreamDestroy": ("cuStreamDestroy_v2", [_p]),
    "cuEventCreate": ("cuEventCreate", [ctypes.POINTER(_p), ctypes.c_uint]),
    "cuEventRecord": ("cuEventRecord", [_p, _p]),
    "cuEventQuery": ("cuEventQuery", [_p]),
    "cuEventElapsedTime": ("cuEventElapsedTime_v2", [ctypes.POINTER(ctypes.c_float), _p, _p]),
    "cuEventDestroy": ("cuEventDestroy_v2", [_p]),
    "cuGetErrorName": ("cuGetErrorName", [CUresult, ctypes.POINTER(ctypes.c_char_p)]),
    "cuGetErrorString": ("cuGetErrorString", [CUresult, ctypes.POINTER(ctypes.c_char_p)]),
}
# drivers older than CUDA 12.8 have no cuEventElapsedTime_v2 (same signature, same meaning)
_FALLBACK_SYMBOLS = {"cuEventElapsedTime_v2": "cuEventElapsedTime"}


class CudaError(CordeeError):
    """A CUDA driver call failed: the call, its CUresult and the driver's name and text for it."""

    def __init__(self, function: str, rc: int, name: str = "", text: str = ""):
        self.function, self.rc, self.name, self.text = function, rc, name, text
        super().__init__(f"{function} failed: {name or 'CUresult'} ({rc}){': ' + text if text else ''}")


class CudaTimeout(CordeeError):
    """GPU work did not finish within its deadline (exit 3: unknown/timeout)."""

    exit_code = EXIT_UNKNOWN


def load_driver(environ=os.environ) -> tuple[ctypes.CDLL, str]:
    """dlopen libcuda.so.1 as a job would (the dynamic linker's search), or the file named by
    CORDEE_CUDA_DRIVER_LIBRARY. Returns the library and the path it was loaded from."""
    override = environ.get(OVERRIDE_VAR, "")
    if override and not os.path.isfile(override):
        raise InputError(f"{OVERRIDE_VAR}={override}: no such file; name the driver's {SONAME} or unset it")
    try:
        lib = ctypes.CDLL(override or SONAME)
    except OSError as e:
        raise InputError(f"cannot load the CUDA driver library {override or SONAME}: {e}") from None
    return lib, override or _mapped_path("libcuda.so") or SONAME


def _mapped_path(fragment: str) -> str | None:
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if fragment in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


class CudaDriver:
    """cuInit'ed driver. Device pointers, streams and events are plain ints (their addresses)."""

    def __init__(self, environ=os.environ):
        self._lib, self.path = load_driver(environ)
        self._fn = {}
        for name, (symbol, argtypes) in _PROTOTYPES.items():
            fn = getattr(self._lib, symbol, None)
            if fn is None and symbol in _FALLBACK_SYMBOLS:
                fn = getattr(self._lib, _FALLBACK_SYMBOLS[symbol], None)
            if fn is None:
                raise InputError(f"{self.path}: no symbol {symbol}; not a CUDA driver library (libcuda.so.1)")
            fn.argtypes, fn.restype = argtypes, CUresult
            self._fn[name] = fn
        self._call("cuInit", 0)

    def _call(self, name: str, *args) -> None:
        rc = self._fn[name](*args)
        if rc != CUDA_SUCCESS:
            raise self.error(name, rc)

    def error(self, function: str, rc: int) -> CudaError:
        texts = []
        for getter in ("cuGetErrorName", "cuGetErrorString"):
            out = ctypes.c_char_p()
            ok = self._fn[getter](rc, ctypes.byref(out)) == CUDA_SUCCESS and out.value
            texts.append(out.value.decode(errors="replace") if ok else "")
        return CudaError(function, rc, *texts)

    def driver_version(self) -> int:
        """CUDA version the driver supports, as 1000*major + 10*minor (13000 = 13.0)."""
        v = ctypes.c_int()
        self._call("cuDriverGetVersion", ctypes.byref(v))
        return v.value

    def device_count(self) -> int:
        n = ctypes.c_int()
        self._call("cuDeviceGetCount", ctypes.byref(n))
        return n.value

    def device(self, ordinal: int) -> int:
        dev = CUdevice()
        self._call("cuDeviceGet", ctypes.byref(dev), ordinal)
        return dev.value

    def pci_bus_id(self, ordinal: int) -> str:
        """e.g. "0000:3B:00.0" (the driver's spelling: upper-case hex)."""
        buf = ctypes.create_string_buffer(32)
        self._call("cuDeviceGetPCIBusId", buf, len(buf), self.device(ordinal))
        return buf.value.decode()

    def use_device(self, ordinal: int) -> int:
        """Retain the device's primary context (the one the CUDA runtime, and so NCCL, uses) and
        make it current on this thread. Returns the context handle; release with release_device."""
        ctx = _p()
        self._call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), self.device(ordinal))
        self._call("cuCtxSetCurrent", ctx)
        return ctx.value

    def release_device(self, ordinal: int) -> None:
        self._call("cuCtxSetCurrent", None)
        self._call("cuDevicePrimaryCtxRelease", self.device(ordinal))

    def mem_alloc(self, nbytes: int) -> int:
        ptr = CUdeviceptr()
        self._call("cuMemAlloc", ctypes.byref(ptr), nbytes)
        return ptr.value

    def mem_free(self, ptr: int) -> None:
        self._call("cuMemFree", ptr)

    def memcpy_htod(self, dst: int, data: bytes | bytearray) -> None:
        src = (ctypes.c_char * len(data)).from_buffer(data) if isinstance(data, bytearray) else data
        self._call("cuMemcpyHtoD", dst, src, len(data))

    def memcpy_dtoh(self, src: int, nbytes: int) -> bytearray:
        out = bytearray(nbytes)
        self._call("cuMemcpyDtoH", (ctypes.c_char * nbytes).from_buffer(out), src, nbytes)
        return out

    def memset_d32(self, ptr: int, value: int, count: int) -> None:
        """Set `count` 32-bit words; `value` is the bit pattern (struct.unpack('I', pack('f', x)))."""
        self._call("cuMemsetD32", ptr, value, count)

    def stream_create(self) -> int:
        """A stream that does not wait for the legacy default stream (as NCCL's users do)."""
        s = _p()
        self._call("cuStreamCreate", ctypes.byref(s), CU_STREAM_NON_BLOCKING)
        return s.value

    def stream_destroy(self, stream: int) -> None:
        self._call("cuStreamDestroy", stream)

    def stream_synchronize(self, stream: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._poll("cuStreamQuery", stream, timeout_s)

    def event_create(self) -> int:
        ev = _p()
        self._call("cuEventCreate", ctypes.byref(ev), CU_EVENT_DEFAULT)
        return ev.value

    def event_record(self, event: int, stream: int) -> None:
        self._call("cuEventRecord", event, stream)

    def event_synchronize(self, event: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._poll("cuEventQuery", event, timeout_s)

    def event_elapsed_ms(self, start: int, end: int) -> float:
        ms = ctypes.c_float()
        self._call("cuEventElapsedTime", ctypes.byref(ms), start, end)
        return ms.value

    def event_destroy(self, event: int) -> None:
        self._call("cuEventDestroy", event)

    def _poll(self, query: str, handle: int, timeout_s: float) -> None:
        """Wait for a stream/event without the driver's blocking wait, which has no timeout:
        spin briefly (short collectives finish in microseconds), then sleep up to 1 ms."""
        deadline = time.monotonic() + timeout_s
        spins = 0
        while True:
            rc = self._fn[query](handle)
            if rc == CUDA_SUCCESS:
                return
            if rc != CUDA_ERROR_NOT_READY:
                raise self.error(query, rc)
            if time.monotonic() > deadline:
                raise CudaTimeout(f"GPU work not finished after {timeout_s:g} s ({query} still not ready)")
            spins += 1
            if spins > 1000:
                time.sleep(min(1e-3, 1e-5 * (spins - 1000)))


def unavailable_reason(environ=os.environ) -> str | None:
    """Why CUDA work cannot run here (no driver library, cuInit fails, no device), or None."""
    try:
        n = CudaDriver(environ).device_count()
    except CordeeError as e:
        return str(e)
    return None if n > 0 else "the CUDA driver reports no device"
