"""Squashfs export with real podman, tar and mksquashfs: a tiny image (the host's dash and a few
coreutils with their libraries, built FROM scratch with ENV, WORKDIR, ENTRYPOINT, a label and a
volume) is exported, and the .sqsh is read back with unsquashfs: Enroot's layout (/etc/environment,
/etc/rc, /etc/fstab), the files of the image, and the run of /etc/rc under real sh."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cordee.containers.enroot_layout import enroot_files, read_image_env, read_image_workdir
from cordee.containers.podman import Podman, StepError
from cordee.images.squashfs import enroot_argv, export_squashfs, mksquashfs_argv

pytestmark = pytest.mark.podman
TOOLS = [
    "/bin/dash",
    "/usr/bin/cat",
    "/usr/bin/env",
    "/usr/bin/pwd",
    "/usr/bin/touch",
    "/usr/bin/ls",
    "/usr/bin/id",
]
CONTAINERFILE = """FROM scratch
COPY rootfs/ /
ENV GREETING="hello from the image" CORDEE_TEST=1
LABEL org.cordee.test="mini image"
WORKDIR /work/dir
VOLUME /scratch
ENTRYPOINT ["/bin/sh", "-c", "echo entry:\\"$0\\" \\"$@\\""]
CMD ["default-cmd"]
"""
# the tag follows the recipe, so a changed recipe is never served from an old image
MINI_TAG = (
    "localhost/cordee-test/mini:"
    + hashlib.sha256((CONTAINERFILE + " ".join(TOOLS)).encode()).hexdigest()[:12]
)


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed on this machine: {', '.join(missing)}")


def make_mini_image(tmp: Path, tag: str = MINI_TAG) -> Podman:
    """Build `tag` from the host's own binaries (no registry, a few MB) with real podman build."""
    need_tools("podman", "mksquashfs", "unsquashfs")
    podman = Podman()
    if podman.image_exists(tag):
        return podman
    ctx = tmp / "mini-context"
    root = ctx / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "scratch"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        shutil.copy2(tool, root / "bin" / os.path.basename(tool))
        libs = subprocess.run(["ldd", tool], capture_output=True, text=True, timeout=30).stdout
        for word in libs.split():
            if word.startswith("/") and os.path.exists(word):
                (root / word.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(word, root / word.lstrip("/"))
    (root / "bin/sh").symlink_to("dash")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    with open(tmp / "mini-build.log", "w") as log:
        podman.build(ctx, ctx / "Containerfile", tag, log=log, timeout=300)
    return podman


def test_enroot_files_from_config():
    files = enroot_files(
        {
            "Env": ["PATH=/opt/venv/bin:/usr/bin", "A=b c"],
            "WorkingDir": "/w d",
            "Entrypoint": ["/e"],
            "Cmd": ["x y"],
            "Volumes": {"/data": {}},
            "Labels": {"k": "v\nw"},
        }
    )
    assert files["etc/environment"] == "PATH=/opt/venv/bin:/usr/bin\nA=b c\n"
    assert "cd '/w d' || exit 1" in files["etc/rc"]
    assert "exec /e 'x y'" in files["etc/rc"] and 'exec /e "$@"' in files["etc/rc"]
    assert "# k v w\n" in files["etc/rc"]  # a label value never breaks out of its comment line
    assert files["etc/fstab"] == "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n"
    assert "exec /bin/sh" in enroot_files({})["etc/rc"]  # no entrypoint, no cmd: a shell, as Enroot


def test_argv_of_both_exporters(tmp_path):
    assert enroot_argv("localhost/x:1", tmp_path / "x.sqsh") == [
        "enroot",
        "import",
        "-o",
        str(tmp_path / "x.sqsh"),
        "podman://localhost/x:1",
    ]
    argv = mksquashfs_argv(tmp_path / "root", tmp_path / "x.sqsh")
    assert argv[:3] == ["mksquashfs", str(tmp_path / "root"), str(tmp_path / "x.sqsh")]
    assert argv[3:5] == ["-comp", "zstd"] and "-noappend" in argv


def test_export_layout_and_rc_runs(tmp_path):
    podman = make_mini_image(tmp_path)
    out = tmp_path / "out" / "mini.sqsh"
    with open(tmp_path / "export.log", "w") as log:
        export_squashfs(podman, MINI_TAG, out, log=log, enroot=False)
    assert out.is_file() and out.stat().st_size > 100_000
    assert [p.name for p in out.parent.iterdir()] == ["mini.sqsh"]  # no temporary left behind
    listing = subprocess.run(
        ["unsquashfs", "-s", str(out)], capture_output=True, text=True, timeout=60
    ).stdout
    assert "zstd" in listing
    root = tmp_path / "unpacked"
    subprocess.run(
        ["unsquashfs", "-no-progress", "-d", str(root), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (root / "bin/dash").is_file() and (root / "work/dir").is_dir()
    assert not any((root / "dev").iterdir()) if (root / "dev").exists() else True
    env = read_image_env(root)
    assert env["GREETING"] == "hello from the image" and env["CORDEE_TEST"] == "1" and "PATH" in env
    assert read_image_workdir(root) == "/work/dir"
    assert "/scratch /scratch none" in (root / "etc/fstab").read_text()
    assert "# org.cordee.test mini image" in (root / "etc/rc").read_text()
    assert os.stat(root / "bin/dash").st_uid == 0
    # /etc/rc as Enroot runs it: sh /etc/rc [ARGS]; inside a chroot of the unpacked image
    rc = subprocess.run(
        ["chroot", str(root), "/bin/sh", "/etc/rc"], capture_output=True, text=True, timeout=30
    )
    assert rc.stdout.strip() == "entry:default-cmd"
    rc = subprocess.run(
        ["chroot", str(root), "/bin/sh", "/etc/rc", "a b", "c"], capture_output=True, text=True, timeout=30
    )
    assert rc.stdout.strip() == "entry:a b c"


def test_failed_export_leaves_no_file(tmp_path):
    need_tools("podman")
    out = tmp_path / "none.sqsh"
    with open(tmp_path / "log", "w") as log, pytest.raises(StepError, match="podman create"):
        export_squashfs(Podman(), "localhost/cordee-test/does-not-exist:0", out, log=log, enroot=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "log"]


def test_existing_sqsh_replaced_atomically(tmp_path):
    podman = make_mini_image(tmp_path)
    out = tmp_path / "mini.sqsh"
    out.write_text("old")
    inode = out.stat().st_ino
    with open(tmp_path / "export.log", "w") as log:
        export_squashfs(podman, MINI_TAG, out, log=log, enroot=False)
    assert out.stat().st_ino != inode and out.read_bytes()[:4] == b"hsqs"  # squashfs magic, new file
