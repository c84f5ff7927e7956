"""A Debian base image made on this machine: `debootstrap --variant=minbase` into a temporary
root, then `tar | podman import`. No registry is needed, only a Debian mirror (the host's own,
from its apt sources, unless $CORDEE_DEBIAN_MIRROR or --mirror says otherwise). The image is
cached by its tag: the plan's tag changes when suite, variant or package list change."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

from cordee import process
from cordee.containers.podman import Podman, StepError, StepTimeout, run_logged, run_piped
from cordee.errors import InputError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT = 1800  # seconds: a minbase with python3 takes 2-4 min on a fast mirror
IMPORT_TIMEOUT = 600
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# debootstrap's per-package lines ("I: Retrieving libc6 ...") stay in the log; phases are shown
SHOWN = (
    "I: Retrieving Release",
    "I: Resolving",
    "I: Installing",
    "I: Unpacking the base",
    "I: Configuring the base",
    "I: Base system",
    "E: ",
    "W: ",
)


def _one_line_sources(text: str):
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 3 and parts[0] == "deb":
            if parts[1].startswith("["):  # deb [arch=amd64 signed-by=...] URI suite ...
                while parts and not parts[0].endswith("]"):
                    parts.pop(0)
                parts = ["deb", *parts[1:]]
            if len(parts) >= 3:
                yield parts[1], parts[2:3]


def _deb822_sources(text: str):
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def host_debian_mirror(suite: str = "bookworm", apt_dir: str = "/etc/apt") -> str:
    """The first host apt source that serves `suite` itself (not -security or -updates)."""
    files = [Path(apt_dir, "sources.list")] + sorted(Path(apt_dir, "sources.list.d").glob("*"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        entries = _deb822_sources(text) if path.suffix == ".sources" else _one_line_sources(text)
        for uri, suites in entries:
            if suite in suites and uri.startswith(("http://", "https://", "file:/")):
                return uri
    return DEFAULT_MIRROR


def choose_mirror(suite: str, override: str | None = None, environ=os.environ) -> str:
    return override or environ.get("CORDEE_DEBIAN_MIRROR") or host_debian_mirror(suite)


def debootstrap_argv(base: dict, root: Path, mirror: str) -> list[str]:
    argv = ["debootstrap", f"--variant={base.get('variant', 'minbase')}"]
    if base.get("include"):
        argv.append("--include=" + ",".join(base["include"]))
    return [*argv, base["suite"], str(root), mirror]


def _mounts_under(root: Path) -> list[str]:
    """debootstrap mounts /proc and /sys in the target; a failed run can leave them there."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def remove_root(root: Path) -> None:
    for point in _mounts_under(root):  # never let rmtree walk into a live /proc or /sys
        try:
            process.run(["umount", "-l", point], timeout=60)
        except OSError:
            pass  # no umount: the check below names what is still mounted
    if _mounts_under(root):
        raise StepError(f"cannot clean {root}: still mounted: {' '.join(_mounts_under(root))}")
    shutil.rmtree(root, ignore_errors=True)


def ensure_base(
    base: dict,
    podman: Podman,
    *,
    log: IO[str],
    workdir: Path,
    mirror: str | None = None,
    environ=os.environ,
) -> bool:
    """Make the debootstrap base `base["tag"]` unless podman has it. True if it was built."""
    tag = base["tag"]
    if podman.image_exists(tag):
        return False
    if shutil.which("debootstrap") is None:
        raise InputError(f"base {tag}: debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise InputError(f"base {tag}: debootstrap needs root (run the build as root, or import the base)")
    url = choose_mirror(base["suite"], mirror, environ)
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=workdir))
    try:
        run_logged(
            debootstrap_argv(base, root, url),
            what=f"debootstrap {base['suite']} from {url}",
            timeout=DEBOOTSTRAP_TIMEOUT,
            log=log,
            show=lambda line: line.startswith(SHOWN),
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # offline image: no use
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        _import_root(root, tag, podman, log)
    finally:
        remove_root(root)
    return True


def _import_root(root: Path, tag: str, podman: Podman, log: IO[str]) -> None:
    try:
        run_piped(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."],
            [
                podman.exe,
                "import",
                "--change",
                f"ENV PATH={DEFAULT_PATH}",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                tag,
            ],
            source_what=f"base {tag}: tar of the debootstrap root",
            what=f"podman import {tag}",
            timeout=IMPORT_TIMEOUT,
            log=log,
            env=podman.env,
        )
    except (StepError, StepTimeout):
        # podman import commits whatever it read before tar failed: a partial base must not be
        # found by the next build's image_exists(tag)
        podman.call("rmi", tag, check=False)
        raise
