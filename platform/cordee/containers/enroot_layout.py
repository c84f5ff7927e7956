"""Enroot's image layout inside a squashfs root: /etc/environment holds the image's variables
(KEY=VALUE, no quoting), /etc/rc changes to the workdir and runs the entrypoint. Image exports
write it (images/squashfs.py); `cordee edf run` reads it back (edf/run.py)."""

from __future__ import annotations

import shlex
from pathlib import Path


def enroot_files(config: dict) -> dict[str, str]:
    """The text of etc/environment, etc/rc, etc/rc.local and etc/fstab for an image's Config."""
    env = config.get("Env") or []
    workdir = config.get("WorkingDir") or "/"
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    if not entrypoint and not cmd:
        cmd = ["/bin/sh"]
    labels = "".join(
        f"# {k} {' '.join(str(v).split())}\n" for k, v in sorted((config.get("Labels") or {}).items())
    )
    ep = " ".join(shlex.quote(a) for a in entrypoint)
    default = " ".join(shlex.quote(a) for a in [*entrypoint, *cmd])
    rc = (
        f"{labels}"
        f"cd {shlex.quote(workdir)} || exit 1\n"
        "[ -s /etc/rc.local ] && . /etc/rc.local\n"
        f'if [ "$#" -gt 0 ]; then exec {ep} "$@"; fi\n'
        f"exec {default}\n"
    )
    fstab = "".join(
        f"${{ENROOT_ROOTFS}}{v} {v} none x-create=dir,bind,rw,nosuid,nodev\n"
        for v in sorted(config.get("Volumes") or {})
    )
    return {
        "etc/environment": "".join(f"{e}\n" for e in env),
        "etc/rc": rc,
        "etc/rc.local": "# sourced by /etc/rc before the command starts\n",
        "etc/fstab": fstab,
    }


def read_image_env(rootfs: Path) -> dict[str, str]:
    """KEY=VALUE lines of ROOTFS/etc/environment (Enroot's format: no quoting, no export)."""
    env: dict[str, str] = {}
    try:
        text = (Path(rootfs) / "etc/environment").read_text()
    except OSError:
        return env
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            env[key.strip()] = value
    return env


def read_image_workdir(rootfs: Path) -> str | None:
    """The directory /etc/rc changes to (first `cd DIR` line), if any."""
    try:
        lines = (Path(rootfs) / "etc/rc").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("cd "):
            words = shlex.split(line.split("||")[0].split("&&")[0])
            return words[1] if len(words) > 1 else None
    return None
