"""The ctypes NCCL binding against the real libnccl.so.2 of the nvidia-nccl-cu12 wheel (no GPU
needed for version, error strings, unique id), the library search order (override, wheels,
dynamic linker), and the CUDA driver binding's marshalling and timeouts.

The CUDA driver part loads a small libcuda compiled here with gcc: host memory stands in for
device memory, and one stream never finishes. It checks what a machine without a GPU can check
(argument passing, versioned symbol names, error texts, the polling deadline); the GPU tests in
tests/gpu/ run the same binding on real devices.
"""

import importlib.metadata
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cordee
from cordee.errors import InputError
from cordee.interconnect import cuda, nccl
from cordee.interconnect.libload import LibraryNotFound, find_library

PLATFORM_DIR = str(Path(cordee.__file__).resolve().parents[1])


def installed_wheel() -> str | None:
    """The NCCL wheel of this environment: cu12 in the dev venv (pyproject), cu13 next to torch's
    CUDA 13 builds."""
    for name in ("nvidia-nccl-cu12", "nvidia-nccl-cu13"):
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


WHEEL = installed_wheel()
pytestmark = pytest.mark.skipif(
    WHEEL is None, reason="no nvidia-nccl-cu12/cu13 wheel: pip install -e '.[dev]'"
)


def wheel_libnccl() -> str:
    files = importlib.metadata.files(WHEEL) or []
    (path,) = [f for f in files if f.name == "libnccl.so.2"]
    return os.path.realpath(path.locate())


@pytest.fixture(scope="module")
def lib():
    return nccl.Nccl()


def test_finds_the_wheel_library(lib):
    loc = nccl.find_libnccl(environ={})
    assert loc.how == "wheel"
    assert loc.path == wheel_libnccl()
    assert lib.path == loc.path


def test_version_equals_the_wheel_version(lib):
    expected = tuple(int(x) for x in importlib.metadata.version(WHEEL).split(".")[:3])
    assert lib.version == expected
    major, minor, patch = expected
    assert lib.version_code == major * 10000 + minor * 100 + patch  # NCCL_VERSION() since 2.9


def test_version_code_decoding_both_schemes():
    assert nccl.decode_version(2804) == (2, 8, 4)  # X*1000+Y*100+Z up to 2.8
    assert nccl.decode_version(20900) == (2, 9, 0)
    assert nccl.decode_version(22809) == (2, 28, 9)


def test_error_string_for_each_result_code(lib):
    texts = {rc: lib.error_string(rc) for rc in nccl.RESULT_NAMES}
    assert all(texts.values())
    assert len(set(texts.values())) == len(texts)  # one text per code
    assert "no error" in texts[0]
    assert "cuda" in texts[1].lower() and "system" in texts[2].lower()
    assert lib.error_string(999) not in texts.values()  # "unknown result code"
    err = nccl.NcclError("ncclAllReduce", 4, lib.error_string(4), "comm argument is NULL")
    assert str(err).startswith("ncclAllReduce failed: ncclInvalidArgument (4): invalid argument")
    assert "comm argument is NULL" in str(err)


def test_unique_id_is_128_fresh_bytes(lib):
    a, b = lib.unique_id(), lib.unique_id()
    assert len(a) == len(b) == 128
    assert a != b and any(a)


def test_null_communicator_is_an_error_not_a_crash(lib):
    comm = nccl.Communicator(lib, None, timeout_s=None)
    with pytest.raises(nccl.NcclError) as e:
        comm.all_reduce(0, 0, 16)
    assert e.value.function == "ncclAllReduce" and e.value.rc == 4
    assert "NULL" in e.value.last_error
    with pytest.raises(nccl.NcclError):
        comm.count  # noqa: B018


def test_bad_arguments_are_input_errors(lib):
    with pytest.raises(InputError, match="128"):
        lib.comm_init_rank(2, b"short", 0)
    with pytest.raises(InputError, match="0..1"):
        lib.comm_init_rank(2, lib.unique_id(), 2)
    comm = nccl.Communicator(lib, None, timeout_s=None)
    with pytest.raises(InputError, match="float32"):
        comm.all_reduce(0, 0, 16, dtype="float33")
    with pytest.raises(InputError, match="sum"):
        comm.all_reduce(0, 0, 16, op="mean")


INIT_WITHOUT_GPU = textwrap.dedent("""
    import json, sys
    from cordee.interconnect.nccl import Nccl, NcclError
    lib = Nccl()
    timeout = None if sys.argv[1] == "blocking" else 30.0
    try:
        lib.comm_init_rank(1, lib.unique_id(), 0, timeout_s=timeout)
        print(json.dumps({"ok": True}))
    except NcclError as e:
        print(json.dumps({"ok": False, "rc": e.rc, "function": e.function, "message": str(e)}))
""")


@pytest.mark.parametrize("mode", ["blocking", "nonblocking"])
def test_communicator_init_without_a_gpu_fails_clearly(mode):
    """In a child (a crash must not take pytest down) with no visible GPU: on a machine with a
    GPU, CUDA_VISIBLE_DEVICES='' hides it, so this holds everywhere."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": PLATFORM_DIR}
    r = subprocess.run(
        [sys.executable, "-c", INIT_WITHOUT_GPU, mode], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"] is False
    assert out["rc"] in (
        1,
        2,
    )  # ncclUnhandledCudaError here (no driver); a hidden GPU may read as a system error
    assert out["function"] == ("ncclCommInitRank" if mode == "blocking" else "ncclCommInitRankConfig")
    assert "cuda" in out["message"].lower() and "last error" in out["message"]


def test_override_to_a_missing_file_is_an_input_error(tmp_path):
    missing = tmp_path / "libnccl.so.2"
    with pytest.raises(LibraryNotFound) as e:
        nccl.find_libnccl(environ={"CORDEE_NCCL_LIBRARY": str(missing)})
    assert isinstance(e.value, InputError)
    assert f"CORDEE_NCCL_LIBRARY={missing}" in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(LibraryNotFound, match="is a directory"):
        nccl.find_libnccl(environ={"CORDEE_NCCL_LIBRARY": str(tmp_path)})


def test_override_to_a_library_that_is_not_nccl(tmp_path):
    libfabric = find_library("libfabric.so.1", override_var=None, environ={})
    with pytest.raises(InputError, match="not an NCCL library"):
        nccl.Nccl(nccl.find_libnccl(environ={"CORDEE_NCCL_LIBRARY": libfabric.path}))


def test_search_order_override_wheel_linker(tmp_path, monkeypatch):
    real = wheel_libnccl()
    # a CUDA 13 wheel layout first on sys.path
    cu13 = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    cu13.mkdir(parents=True)
    (cu13 / "libnccl.so.2").symlink_to(real)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    other = tmp_path / "other" / "libnccl.so.2"
    other.parent.mkdir()
    shutil.copy(real, other)
    assert nccl.find_libnccl(environ={"CORDEE_NCCL_LIBRARY": str(other)}) == (str(other), "override")
    loc = nccl.find_libnccl(environ={})
    assert loc == (real, "wheel")  # the symlink's target
    assert nccl.Nccl(loc).version == nccl.Nccl().version
    # no wheel anywhere: LD_LIBRARY_PATH, in its order
    monkeypatch.setattr(sys, "path", [str(tmp_path / "empty")])
    first, second = tmp_path / "ld1", tmp_path / "ld2"
    first.mkdir()
    second.mkdir()
    (second / "libnccl.so.2").symlink_to(other)
    loc = nccl.find_libnccl(environ={"LD_LIBRARY_PATH": f"{first}:{second}"})
    assert loc == (str(other), "linker")
    with pytest.raises(LibraryNotFound) as e:
        nccl.find_libnccl(environ={"LD_LIBRARY_PATH": str(first)})
    for place in ("CORDEE_NCCL_LIBRARY", "nvidia/cu13/lib/libnccl.so.2", str(first), "ldconfig", "/usr/lib"):
        assert place in str(e.value)


FAKE_LIBCUDA_C = r"""
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
typedef unsigned long long ptr_t;
static int queries;
int cuInit(unsigned flags) { return flags == 0 ? 0 : 1; }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
int cuDeviceGetCount(int *n) { *n = 2; return 0; }
int cuDeviceGet(int *dev, int ordinal) {
    if (ordinal < 0 || ordinal > 1) return 101; *dev = ordinal + 40; return 0; }
int cuDeviceGetPCIBusId(char *buf, int len, int dev) { snprintf(buf, len, "0000:%02X:00.0", dev); return 0; }
int cuDevicePrimaryCtxRetain(void **ctx, int dev) { *ctx = (void *)(0x1000L + dev); return 0; }
int cuDevicePrimaryCtxRelease_v2(int dev) { return dev >= 40 ? 0 : 101; }
int cuCtxSetCurrent(void *ctx) { return 0; }
int cuMemAlloc_v2(ptr_t *p, size_t n) { *p = (ptr_t)malloc(n); return *p ? 0 : 2; }
int cuMemFree_v2(ptr_t p) { free((void *)p); return 0; }
int cuMemcpyHtoD_v2(ptr_t dst, const void *src, size_t n) { memcpy((void *)dst, src, n); return 0; }
int cuMemcpyDtoH_v2(void *dst, ptr_t src, size_t n) { memcpy(dst, (void *)src, n); return 0; }
int cuMemsetD32_v2(ptr_t p, unsigned v, size_t n) {
    for (size_t i = 0; i < n; i++) ((unsigned *)p)[i] = v; return 0; }
int cuStreamCreate(void **s, unsigned flags) { *s = (void *)(0x2000L + flags); return 0; }
/* stream 0x2001 (the non-blocking one cordee makes) is busy for 3 queries; a stream of
   address 0x2bad never finishes */
int cuStreamQuery(void *s) { if (s == (void *)0x2bad) return 600; return ++queries % 4 ? 600 : 0; }
int cuStreamDestroy_v2(void *s) { return 0; }
int cuEventCreate(void **e, unsigned flags) { *e = (void *)0x3000; return 0; }
int cuEventRecord(void *e, void *s) { return 0; }
int cuEventQuery(void *e) { return 0; }
int cuEventElapsedTime(float *ms, void *a, void *b) { *ms = 1.5f; return 0; }  /* no _v2: an older driver */
int cuEventDestroy_v2(void *e) { return 0; }
int cuGetErrorName(int rc, const char **s) {
    if (rc != 101) return 1; *s = "CUDA_ERROR_INVALID_DEVICE"; return 0; }
int cuGetErrorString(int rc, const char **s) {
    if (rc != 101) return 1; *s = "invalid device ordinal"; return 0; }
"""


@pytest.fixture(scope="module")
def fake_driver(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc missing: apt-get install gcc")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "fake.c").write_text(FAKE_LIBCUDA_C)
    so = d / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(d / "fake.c")], check=True, timeout=120)
    return cuda.CudaDriver(environ={cuda.OVERRIDE_VAR: str(so)})


def test_cuda_binding_passes_buffers_and_ints_right(fake_driver):
    cu = fake_driver
    assert cu.driver_version() == 13000 and cu.device_count() == 2
    assert cu.pci_bus_id(1) == "0000:29:00.0"  # device handle 41 from cuDeviceGet
    assert cu.use_device(1) == 0x1029
    cu.release_device(1)
    n = 1000
    ptr = cu.mem_alloc(4 * n)
    cu.memset_d32(ptr, struct.unpack("I", struct.pack("f", 2.5))[0], n)
    assert cu.memcpy_dtoh(ptr, 4 * n) == struct.pack("f", 2.5) * n
    data = struct.pack(f"{n}f", *range(n))
    cu.memcpy_htod(ptr, data)
    assert cu.memcpy_dtoh(ptr, 4 * n) == data
    cu.memcpy_htod(ptr, bytearray(b"\x01" * 8))
    assert cu.memcpy_dtoh(ptr, 8) == b"\x01" * 8
    cu.mem_free(ptr)
    assert cu.event_elapsed_ms(cu.event_create(), cu.event_create()) == 1.5  # fallback symbol


def test_cuda_errors_name_the_call_and_the_driver_text(fake_driver):
    with pytest.raises(cuda.CudaError) as e:
        fake_driver.device(7)
    assert e.value.rc == 101
    assert str(e.value) == "cuDeviceGet failed: CUDA_ERROR_INVALID_DEVICE (101): invalid device ordinal"


def test_cuda_waits_poll_and_time_out(fake_driver):
    stream = fake_driver.stream_create()
    fake_driver.stream_synchronize(stream, timeout_s=5)  # ready after a few queries
    with pytest.raises(cuda.CudaTimeout, match="0.2 s"):
        fake_driver.stream_synchronize(0x2BAD, timeout_s=0.2)


def test_cuda_driver_library_errors(tmp_path):
    with pytest.raises(InputError, match="CORDEE_CUDA_DRIVER_LIBRARY"):
        cuda.CudaDriver(environ={cuda.OVERRIDE_VAR: str(tmp_path / "libcuda.so.1")})
    not_cuda = find_library("libfabric.so.1", override_var=None, environ={}).path
    with pytest.raises(InputError, match="no symbol cuInit"):
        cuda.CudaDriver(environ={cuda.OVERRIDE_VAR: not_cuda})
    reason = cuda.unavailable_reason(environ={cuda.OVERRIDE_VAR: not_cuda})
    assert reason and "cuInit" in reason


FAKE_LIBNCCL_C = r"""
#include <stddef.h>
#include <string.h>
/* Stand-in libnccl for the non-blocking communicator logic: init and finalize stay
   "in progress" for a few ncclCommGetAsyncError polls; comm id 2 never finishes. */
typedef struct { char internal[128]; } uid_t128;
typedef struct {
    size_t size; unsigned magic, version; int blocking, cga, minc, maxc; const char *net; } cfg_t;
static int polls_left, aborted, destroyed, finalized;
static cfg_t seen_cfg;
static struct { const void *s; void *r; size_t count; int dtype, op; void *comm, *stream; } last;
int ncclGetVersion(int *v) { *v = 22809; return 0; }
int ncclGetUniqueId(uid_t128 *u) { memset(u->internal, 7, 128); return 0; }
int ncclCommInitRank(void **c, int n, uid_t128 id, int r) { *c = (void *)1; return 0; }
int ncclCommInitRankConfig(void **c, int n, uid_t128 id, int r, cfg_t *cfg) {
    seen_cfg = *cfg; *c = (void *)(long)(id.internal[0] == 2 ? 2 : 1); polls_left = 3; return 7; }
int ncclCommGetAsyncError(void *c, int *state) {
    if (c == (void *)2) { *state = 7; return 0; }
    *state = polls_left-- > 0 ? 7 : 0; return 0; }
int ncclCommCount(void *c, int *n) { *n = 1; return 0; }
int ncclCommCuDevice(void *c, int *d) { *d = 0; return 0; }
int ncclCommUserRank(void *c, int *r) { *r = 0; return 0; }
int ncclCommFinalize(void *c) { finalized++; polls_left = 2; return 7; }
int ncclCommDestroy(void *c) { destroyed++; return 0; }
int ncclCommAbort(void *c) { aborted++; return 0; }
int ncclAllReduce(const void *s, void *r, size_t count, int dtype, int op, void *comm, void *stream) {
    last.s = s; last.r = r; last.count = count; last.dtype = dtype; last.op = op;
    last.comm = comm; last.stream = stream;
    return 0; }
const char *ncclGetErrorString(int rc) { return rc ? "fake error" : "no error"; }
const char *ncclGetLastError(void *c) { return ""; }
int fake_counts(int *out) { out[0] = aborted; out[1] = destroyed; out[2] = finalized; return 0; }
size_t fake_last(long *out) {
    out[0] = (long)last.s; out[1] = (long)last.r; out[2] = (long)last.count; out[3] = last.dtype;
    out[4] = last.op; out[5] = (long)last.comm; out[6] = (long)last.stream;
    out[7] = (long)seen_cfg.size; out[8] = seen_cfg.magic; out[9] = seen_cfg.version;
    out[10] = seen_cfg.blocking;
    out[11] = seen_cfg.cga; return 0; }
"""


@pytest.fixture()
def fake_nccl(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc missing: apt-get install gcc")
    (tmp_path / "fake.c").write_text(FAKE_LIBNCCL_C)
    so = tmp_path / "libnccl.so.2"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(so), str(tmp_path / "fake.c")], check=True, timeout=120
    )
    lib = nccl.Nccl(nccl.find_libnccl(environ={"CORDEE_NCCL_LIBRARY": str(so)}))
    import ctypes

    def counts():
        out = (ctypes.c_int * 3)()
        lib._lib.fake_counts(out)
        return dict(zip(("aborted", "destroyed", "finalized"), out, strict=True))

    def last():
        out = (ctypes.c_long * 12)()
        lib._lib.fake_last(out)
        return list(out)

    return lib, counts, last


def test_nonblocking_init_polls_until_ready_then_finalizes(fake_nccl):
    lib, counts, last = fake_nccl
    assert lib.version == (2, 28, 9)
    with lib.comm_init_rank(1, bytes([1]) * 128, 0, timeout_s=5) as comm:
        assert comm.nonblocking and comm.count == 1
        comm.all_reduce(0x1000, 0x2000, 3 << 30, "bfloat16", "avg", stream=0x77)
    s, r, count, dtype, op, handle, stream, size, magic, version, blocking, cga = last()
    assert (s, r, count, dtype, op, handle, stream) == (0x1000, 0x2000, 3 << 30, 9, 4, 1, 0x77)
    # the ncclConfig_t prefix NCCL saw: 2.17 layout, magic, non-blocking, the rest "undefined"
    assert (size, magic, version, blocking, cga) == (40, 0xCAFEBEEF, 21700, 0, -(2**31))
    assert counts() == {"aborted": 0, "destroyed": 1, "finalized": 1}


def test_nonblocking_init_past_its_deadline_aborts(fake_nccl):
    lib, counts, _ = fake_nccl
    t0 = time.monotonic()
    with pytest.raises(nccl.NcclTimeout) as e:
        lib.comm_init_rank(2, bytes([2]) * 128, 0, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - t0 < 5
    assert e.value.exit_code == 3 and "ncclCommInitRankConfig" in str(e.value)
    assert counts()["aborted"] == 1


def test_blocking_communicator_destroys_without_finalize(fake_nccl):
    lib, counts, last = fake_nccl
    with lib.comm_init_rank(1, bytes(128), 0) as comm:
        assert not comm.nonblocking
        comm.all_reduce(0x10, 0x10, 5)  # in place, float32 sum, default stream
    assert last()[2:7] == [5, 7, 0, 1, 0]
    assert counts() == {"aborted": 0, "destroyed": 1, "finalized": 0}
    with pytest.raises(RuntimeError):
        with lib.comm_init_rank(1, bytes(128), 0):
            raise RuntimeError("a failing step aborts instead of destroying")
    assert counts()["aborted"] == 1
