"""Which filesystem a path is on: /proc/self/mountinfo parsed into mounts, the mount holding a
path (or where it would be created), and the table of filesystem types shared between nodes.

Kept apart from the storage checks because `cordee io bench` (iofs) needs the mount of a path too,
without the cache, space and Lustre checks around it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Filesystems shared between nodes (a write on one node is seen by the others, through a server).
# The kernel's type names as /proc/self/mountinfo prints them; FUSE clients as "fuse.NAME".
SHARED_FS: dict[str, str] = {
    "lustre": "Lustre (the scratch and store filesystems of HPC centres)",
    "nfs": "NFS v2/v3",
    "nfs4": "NFS v4",
    "gpfs": "IBM Storage Scale (GPFS)",
    "beegfs": "BeeGFS",
    "cifs": "SMB/CIFS",
    "smb3": "SMB 3",
    "ceph": "CephFS (kernel client)",
    "fuse.ceph-fuse": "CephFS (FUSE client)",
    "panfs": "Panasas PanFS",
    "wekafs": "WEKA",
    "glusterfs": "GlusterFS",
    "fuse.glusterfs": "GlusterFS (FUSE client)",
    "orangefs": "OrangeFS / PVFS2",
    "pvfs2": "OrangeFS / PVFS2",
    "afs": "AFS",
    "fuse.sshfs": "SSHFS",
    "9p": "9P (virtio/remote)",
    "dvs": "Cray DVS (projects a shared filesystem onto compute nodes)",
}


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts of /proc/self/mountinfo (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
    [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`. Malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 6 or not tail:
            continue
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]) if len(tail) > 1 else ""))
    return mounts


def existing_ancestor(path: str) -> str:
    """`path` resolved (symlinks followed); where it does not exist yet, its nearest existing
    ancestor: that is the filesystem it would be created on."""
    if "\0" in path:
        raise ValueError("a NUL byte in the path")
    current = os.path.abspath(path)
    while not os.path.exists(current) and current != os.path.dirname(current):
        current = os.path.dirname(current)
    return os.path.realpath(current)


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding `path` (resolved): the longest mount point that contains it; of two
    mounts on one point the later, which hides the earlier."""
    if "\0" in path:
        raise ValueError("a NUL byte in the path")
    where = os.path.realpath(os.path.abspath(path))  # the part that exists resolved, the rest as written
    best = None
    for m in mounts:
        root = m.mountpoint.rstrip("/") or "/"
        if where == root or where.startswith(root + "/") or root == "/":
            if best is None or len(root) >= len(best.mountpoint.rstrip("/") or "/"):
                best = m
    return best


def read_mounts() -> list[Mount]:
    """This process's mounts; none where /proc is not mounted (every check then says so)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return []


def is_shared(fstype: str) -> bool:
    return fstype in SHARED_FS
