"""Storage checks (cordee.storage.mounts and .checks, cordee.preflight.storage_checks): filesystem types from
mountinfo lines of each kind, the shared-filesystem decision, the cache checks on this machine's real
paths, free space and inodes on a small tmpfs mounted and filled here, and the preflight wiring.

A cache on NFS or Lustre cannot be made on this machine, so the "shared" decision is a function of
the filesystem type, tested on mountinfo lines of each type (format: proc(5), /proc/PID/mountinfo),
and the whole check runs end to end on this machine's real mounts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from cordee.errors import InputError
from cordee.storage import checks
from cordee.storage.mounts import (
    SHARED_FS,
    existing_ancestor,
    is_shared,
    mount_of,
    parse_mountinfo,
    read_mounts,
)

# One line per filesystem kind, as /proc/self/mountinfo prints them (proc(5)): ID PARENT MAJ:MIN
# ROOT MOUNTPOINT OPTIONS [OPTIONAL FIELDS] - FSTYPE SOURCE SUPEROPTIONS.
MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
25 24 0:23 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=24684084k
120 27 0:52 / /capstor rw,relatime shared:60 - lustre 10.6.72.10@o2ib:10.6.72.11@o2ib:/capstor rw,flock
121 27 0:53 / /iopsstor rw,relatime shared:61 - lustre 10.6.80.1@o2ib:/iopsstor rw,flock
98 27 0:47 / /users rw,relatime shared:50 - nfs4 nfs01:/users rw,vers=4.2,rsize=1048576,hard,proto=tcp
99 27 0:48 / /apps rw,relatime - nfs nfs02:/apps rw,vers=3,hard,proto=tcp
100 27 0:49 / /gpfs/store rw,relatime - gpfs store rw
101 27 0:50 / /beegfs rw,relatime - beegfs beegfs_nodev rw,cfgFile=/etc/beegfs/beegfs-client.conf
102 27 0:51 / /mnt/share rw,relatime - cifs //fileserver/share rw,vers=3.1.1
103 27 0:54 / /mnt/ceph rw,relatime - ceph 10.0.0.5:6789:/ rw,name=admin
104 27 7:0 / /data/img rw,relatime - squashfs /dev/loop0 ro
105 27 0:55 / /data/sq rw,nosuid,nodev - fuse.squashfuse squashfuse rw,user_id=0
106 27 0:56 / /local/nvme rw,relatime - xfs /dev/nvme0n1 rw,attr2
107 120 0:52 /scratch /scratch rw,relatime - lustre 10.6.72.10@o2ib:/capstor rw,flock
108 27 0:57 / /mnt/with\\040space rw - nfs4 srv:/x rw
"""

SHARED = {"lustre", "nfs", "nfs4", "gpfs", "beegfs", "cifs", "ceph"}


def test_mountinfo_lines_of_each_type():
    mounts = parse_mountinfo(MOUNTINFO + "garbage line\n\n")
    assert len(mounts) == 15
    types = {m.mountpoint: m.fstype for m in mounts}
    assert (
        types["/capstor"] == "lustre" and types["/users"] == "nfs4" and types["/data/sq"] == "fuse.squashfuse"
    )
    assert types["/mnt/with space"] == "nfs4"  # \040 unescaped
    for m in mounts:
        assert is_shared(m.fstype) == (m.fstype in SHARED), m


def test_mount_of_takes_the_longest_mount_point(tmp_path):
    mounts = parse_mountinfo(MOUNTINFO)
    assert mount_of("/capstor/scratch/alice/ckpt", mounts).mountpoint == "/capstor"
    assert mount_of("/users/alice/.triton/cache", mounts).fstype == "nfs4"
    assert mount_of("/usersX/alice", mounts).fstype == "ext4"  # a prefix is not a parent
    assert mount_of("/dev/shm/cordee", mounts).fstype == "tmpfs"
    assert mount_of("/scratch/x", mounts).fstype == "lustre"


def test_cache_on_a_shared_filesystem_is_a_warning():
    mounts = parse_mountinfo(MOUNTINFO)
    env = {"HOME": "/users/alice", "USER": "alice", "HF_HOME": "/iopsstor/scratch/alice/hf",
           "TRITON_CACHE_DIR": "/dev/shm/alice/triton"}  # fmt: skip
    found = {f.check.removeprefix("storage.cache."): f for f in checks.cache_findings(env, mounts)}
    assert found["TRITON_CACHE_DIR"].status == "ok" and "node-local" in found["TRITON_CACHE_DIR"].detail
    assert found["HF_HOME"].status == "warn" and "(lustre), a shared filesystem" in found["HF_HOME"].detail
    assert found["HF_DATASETS_CACHE"].path == "/iopsstor/scratch/alice/hf/datasets"
    assert found["HF_DATASETS_CACHE"].status == "warn"
    cuda = found["CUDA_CACHE_PATH"]
    assert cuda.path == "/users/alice/.nv/ComputeCache" and cuda.status == "warn"
    assert "set CUDA_CACHE_DISABLE=1" in cuda.detail
    found = {f.check: f for f in checks.cache_findings({**env, "CUDA_CACHE_DISABLE": "1"}, mounts)}
    assert found["storage.cache.CUDA_CACHE_PATH"].status == "ok"
    assert found["storage.cache.TORCHINDUCTOR_CACHE_DIR"].path == "/tmp/torchinductor_alice"


def test_caches_on_this_machine_end_to_end(tmp_path):
    """The real mounts of this machine: every cache is judged by the type df(1) reports for it."""
    env = {"HOME": str(tmp_path), "USER": "u", "TRITON_CACHE_DIR": "/dev/shm/cordee-test/triton",
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    for f in checks.cache_findings(env, read_mounts()):
        fstype = df_type(f.path)
        assert f.status == ("warn" if fstype in SHARED_FS else "ok"), f
        assert f"({fstype})" in f.detail


def test_unresolvable_cache_paths_are_skipped_not_crashing():
    found = checks.cache_findings({"HOME": "/x", "HF_HOME": "/a\0b"}, read_mounts())
    hf = [f for f in found if f.check == "storage.cache.HF_HOME"][0]
    assert hf.status == "skip" and "\n" not in hf.detail


def df_type(path: str) -> str:
    existing = existing_ancestor(path)
    r = subprocess.run(["df", "--output=fstype", existing], capture_output=True, text=True, timeout=30)
    return r.stdout.split()[-1]


# --- free space and inodes on a real, small tmpfs ---------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs with 64 inodes, mounted here (needs root) and unmounted after."""
    point = tmp_path / "mnt"
    point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs", str(point)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def statuses(found):
    return {f.check: f.status for f in found}


def test_free_space_thresholds_are_crossed_as_the_filesystem_fills(small_tmpfs):
    ckpt = small_tmpfs / "ckpt"
    assert statuses(checks.space_findings(str(ckpt))) == {"storage.space": "ok", "storage.inodes": "ok"}
    (small_tmpfs / "big").write_bytes(b"\0" * (3900 << 10))  # about 95% of 4 MiB
    found = {f.check: f for f in checks.space_findings(str(ckpt))}
    assert found["storage.space"].status == "warn" and found["storage.space"].threshold == 10.0
    assert 2.0 <= found["storage.space"].value < 10.0 and "not there yet" in found["storage.space"].detail
    with open(small_tmpfs / "big", "ab") as f:
        f.write(b"\0" * (150 << 10))
    found = {f.check: f for f in checks.space_findings(str(ckpt))}
    assert found["storage.space"].status == "fail" and found["storage.space"].value < 2.0
    # thresholds from the environment
    warn, fail = checks.thresholds({"CORDEE_FREE_WARN_PCT": "0.5", "CORDEE_FREE_FAIL_PCT": "0"})
    assert statuses(checks.space_findings(str(ckpt), warn, fail))["storage.space"] in ("ok", "warn")


def test_free_inodes_thresholds(small_tmpfs):
    for i in range(58):
        (small_tmpfs / f"f{i}").touch()
    found = {f.check: f for f in checks.space_findings(str(small_tmpfs))}
    assert found["storage.inodes"].status == "warn", found["storage.inodes"]
    for i in range(58, 64):
        try:
            (small_tmpfs / f"f{i}").touch()
        except OSError:  # no inodes left: exactly the situation the check is for
            break
    assert {f.check: f for f in checks.space_findings(str(small_tmpfs))}["storage.inodes"].status == "fail"


@pytest.mark.parametrize(
    "env",
    [{"CORDEE_FREE_WARN_PCT": "lots"}, {"CORDEE_FREE_WARN_PCT": "nan"}, {"CORDEE_FREE_FAIL_PCT": "101"},
     {"CORDEE_FREE_WARN_PCT": "1", "CORDEE_FREE_FAIL_PCT": "5"}],
)  # fmt: skip
def test_bad_thresholds_are_input_errors(env):
    with pytest.raises(InputError, match="CORDEE_FREE_"):
        checks.thresholds(env)


# --- all of it, and the preflight checks ----------------------------------------------------------


def test_storage_findings_on_this_machine(tmp_path):
    found = checks.storage_findings({"HOME": str(tmp_path)}, data_dir=str(tmp_path), ckpt_dir=None)
    by = {f.check: f for f in found}
    assert (
        by["storage.stripe.data"].detail == f"skipped: {tmp_path} is on {df_type(str(tmp_path))}, not Lustre"
    )
    assert by["storage.stripe.checkpoints"].status == "skip" and "--checkpoints DIR" in by[
        "storage.stripe.checkpoints"].detail  # fmt: skip
    assert by["storage.space"].status == "skip"


def test_preflight_storage_checks_at_the_standard_level_only(tmp_path):
    from cordee.preflight import registry
    from cordee.preflight.storage_checks import storage_checks

    names = {c.name for c in storage_checks()}
    assert names == {"storage.caches", "storage.stripe", "storage.space"}
    assert all(c.scope == "node" and c.level == "standard" and not c.needs_torch for c in storage_checks())
    assert names <= {c.name for c in registry.checks("standard", environ={})}
    assert not names & {c.name for c in registry.checks("quick", environ={})}
    ctx = SimpleNamespace(environ={"HOME": str(tmp_path), "CORDEE_CKPT_DIR": str(tmp_path)})
    results = [r for c in storage_checks() for r in c.run(ctx)]
    by = {r.check: r for r in results}
    assert (
        by["storage.stripe.data"].status == "skip"
        and "CORDEE_DATA_DIR is not set" in by["storage.stripe.data"].detail
    )
    assert by["storage.stripe.checkpoints"].detail.endswith("not Lustre")
    assert by["storage.space"].status in ("ok", "warn", "fail") and by["storage.space"].unit == "%"
    assert all(r.as_dict()["detail"].count("\n") == 0 for r in results)


def test_env_check_cli_reports_storage(tmp_path):
    cordee = str(Path(os.sys.executable).with_name("cordee"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CORDEE_DATA_DIR": str(tmp_path)}
    r = subprocess.run([cordee, "env", "check", "--checkpoints", "/dev/shm", "--json"], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.stderr == ""
    doc = __import__("json").loads(r.stdout)
    by = {f["check"]: f for f in doc["storage"]}
    assert by["storage.stripe.data"]["path"] == str(tmp_path)  # from CORDEE_DATA_DIR
    assert by["storage.stripe.checkpoints"]["detail"] == "skipped: /dev/shm is on tmpfs, not Lustre"
    assert by["storage.space"]["path"] == "/dev/shm" and doc["exit_code"] == r.returncode
