"""Export a podman image to a squashfs that Enroot / the Container Engine runs.

With enroot installed: `enroot import -o X.sqsh podman://TAG`. Without it (Enroot is not packaged
for Debian): `podman create` + `podman export | tar -x` into a temporary rootfs, the three files
Enroot's image format defines (/etc/environment from the image's Env, /etc/rc that cds to the
workdir and execs entrypoint + command, /etc/fstab from its volumes; docs/image-format.md in
NVIDIA/enroot), then `mksquashfs ROOTFS X.sqsh -comp zstd -noappend -all-root`. The .sqsh is
written under a temporary name and renamed, so a failed export never leaves a partial image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

from cordee.containers.enroot_layout import enroot_files
from cordee.containers.podman import Podman, run_logged, run_piped

EXPORT_TIMEOUT = 1800  # seconds: export + mksquashfs of a few GB on 2 cores is ~5 min


def enroot_argv(tag: str, out: Path) -> list[str]:
    return ["enroot", "import", "-o", str(out), f"podman://{tag}"]


# zstd level 3, not mksquashfs' default 15: measured on a 1.1 GB torch rootfs (2 cores), level 3
# took 5 s for 303 MiB, level 15 took 81 s for 263 MiB; reading either back costs the same.
ZSTD_LEVEL = 3


def mksquashfs_argv(rootfs: Path, out: Path) -> list[str]:
    # -all-root as Enroot does: files belong to whoever starts the container
    return [
        "mksquashfs",
        str(rootfs),
        str(out),
        "-comp",
        "zstd",
        "-Xcompression-level",
        str(ZSTD_LEVEL),
        "-noappend",
        "-all-root",
        "-no-progress",
    ]


def export_squashfs(
    podman: Podman,
    tag: str,
    out: Path,
    *,
    log: IO[str],
    timeout: float = EXPORT_TIMEOUT,
    enroot: bool | None = None,
) -> Path:
    """Write image `tag` to `out` (.sqsh) atomically; returns out."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    use_enroot = shutil.which("enroot") is not None if enroot is None else enroot
    try:
        if use_enroot:
            env = {
                **podman.env,
                "ENROOT_SQUASH_OPTIONS": f"-comp zstd -Xcompression-level {ZSTD_LEVEL} -noappend",
            }
            run_logged(enroot_argv(tag, tmp), what=f"enroot import {tag}", timeout=timeout, log=log, env=env)
        else:
            _export_with_podman(podman, tag, tmp, log=log, timeout=timeout)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _export_with_podman(podman: Podman, tag: str, tmp: Path, *, log: IO[str], timeout: float) -> None:
    cid = podman.call("create", "--pull=never", tag, "/bin/true").stdout.strip()  # local images only
    rootfs = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=tmp.parent))
    try:
        _untar_container(podman, cid, rootfs, log=log, timeout=timeout)
        config = podman.inspect_image(tag).get("Config") or {}
        for rel, text in enroot_files(config).items():
            path = rootfs / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # may be a symlink in the image: never write through it
            path.write_text(text)
        workdir = rootfs / (config.get("WorkingDir") or "/").lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)
        run_logged(mksquashfs_argv(rootfs, tmp), what="mksquashfs", timeout=timeout, log=log)
    finally:
        podman.call("rm", "-f", cid, check=False)
        shutil.rmtree(rootfs, ignore_errors=True)


def _untar_container(podman: Podman, cid: str, rootfs: Path, *, log: IO[str], timeout: float) -> None:
    # --anchored: only the top-level dev/ is skipped (the runtime provides /dev), not every dev/
    tar = [
        "tar",
        "-C",
        str(rootfs),
        "--numeric-owner",
        "-xpf",
        "-",
        "--anchored",
        "--exclude=dev/*",
        "--exclude=./dev/*",
    ]
    run_piped(
        [podman.exe, "export", cid],
        tar,
        source_what=f"podman export {cid[:12]}",
        what=f"podman export {cid[:12]} | tar -x",
        timeout=timeout,
        log=log,
        source_env=podman.env,
    )
