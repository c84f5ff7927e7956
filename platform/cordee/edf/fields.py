"""Checks of single EDF values (mounts, image, annotations, env names) and of the merged result.

Each check returns problems as (severity, message) pairs; the caller names file and field.
Sources: cscs-docs software/container-engine/edf.md (EDF reference), run.md (mounts, SquashFS
mounts, EDF search path, Pyxis differences), resource-hook.md (annotations and hooks); Pyxis
args.c (mount syntax, '+' joins flags) and Enroot bin/enroot-mount.c (the mount options).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import NamedTuple

from cordee.numbers import as_int

Problem = tuple[str, str]  # (severity, message)


class Mount(NamedTuple):  # re-exported by cordee.edf.load, its home in the API
    src: str  # absolute host path (relative ones are resolved against the working directory)
    dst: str  # absolute path in the container
    flags: tuple[str, ...]  # ("sqsh",) = mount a squashfs file; else bind-mount options


# Bind-mount flags: CE/Pyxis turn "a+b" into Enroot's fstab options "x-create=auto,rbind,a,b";
# this is the option table of Enroot's bin/enroot-mount.c, less remount/x-move/x-detach, which
# make no sense for an EDF mount, and mand. `sqsh` is CE's own (edf.md: "unless the only flag
# is sqsh, in which it performs a SquashFS mount").
BIND_FLAGS = (
    "ro rw private rprivate shared rshared slave rslave unbindable runbindable nosuid suid nodev dev "
    "noexec exec noatime atime nodiratime diratime relatime norelatime strictatime nostrictatime "
    "lazytime nolazytime sync async dirsync bind rbind nofail silent loud "
    "x-create=dir x-create=file x-create=auto"
).split()
SQSH = "sqsh"
SQUASHFS_MAGIC = b"hsqs"

BOOL_STRINGS = ("true", "false")
# Variants "configured at the moment of writing" (resource-hook.md, AWS OFI NCCL hook); cuda11 was
# listed by earlier versions of that page only.
OFI_VARIANTS = ("cuda12", "cuda13", "cuda-dl", "rocm5", "rocm6")
OFI_OLD_VARIANTS = ("cuda11",)

# annotation -> documented values (None: any non-empty string, checked by its own rule below)
KNOWN_ANNOTATIONS: dict[str, tuple[str, ...] | None] = {
    "com.hooks.cxi.enabled": BOOL_STRINGS,
    "com.hooks.aws_ofi_nccl.enabled": BOOL_STRINGS,
    "com.hooks.aws_ofi_nccl.variant": OFI_VARIANTS + OFI_OLD_VARIANTS,
    "com.hooks.ssh.enabled": BOOL_STRINGS,
    "com.hooks.ssh.authorize_ssh_key": None,
    "com.hooks.ssh.port": None,
    "com.hooks.nvidia_cuda_mps.enabled": BOOL_STRINGS,
    "com.hooks.netstack.source": None,  # host | artifact | artifact:<version>
    "com.hooks.netstack.version": None,
    "com.hooks.netstack.name": None,
    "com.hooks.dcgm.enabled": BOOL_STRINGS,  # cscs-docs jobreport / gssr pages
    "com.pyxis.pytorch_remap_vars": BOOL_STRINGS,  # run.md, "Differences from upstream Pyxis"
    "com.pyxis.entrypoint_log": BOOL_STRINGS,
}

# Pieces of the OCI distribution grammar, shared with the spec's base-image reference
# (images/spec/grammars.py BASE_IMAGE_REF): a path component, a tag, a digest.
IMAGE_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
IMAGE_DIGEST = r"sha256:[a-f0-9]{64}"
# An EDF `image`: Enroot's `[USER@][REGISTRY#]IMAGE[:TAG]`, registry optional (Enroot then uses Docker Hub).
EDF_IMAGE_REF = re.compile(
    r"(?:(?P<user>[^@#/:\s]+)@)?"
    r"(?:(?P<registry>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?)#)?"
    rf"(?P<image>{IMAGE_PATH_COMPONENT}(?:/{IMAGE_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{IMAGE_TAG}))?"
    rf"(?:@(?P<digest>{IMAGE_DIGEST}))?"
)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # also the spec's ENV_NAME grammar
_SSH_KEY_TEXT = re.compile(r"(ssh-|ecdsa-|sk-)[A-Za-z0-9-]+(@openssh\.com)? ")


def is_path(value: str) -> bool:
    """Absolute, or relative written as ./ or ../ (edf.md, "Relative paths expansion")."""
    return value.startswith(("/", "./", "../")) or value in (".", "..")


def resolve_relative(value: str) -> str:
    """A ./ or ../ path made absolute against the caller's working directory, not the EDF's
    folder (edf.md); any other value is returned as it is."""
    if is_path(value) and value.startswith("."):
        return os.path.normpath(os.path.join(os.getcwd(), value))
    return value


def mount_syntax(text: str) -> tuple[Mount | None, list[Problem]]:
    """`SRC:DST[:FLAGS]` or just `PATH` (= PATH:PATH, Pyxis' short form) -> (src, dst, flags), by the
    grammar alone: no file is looked at and relative sources stay as written. The one mount grammar:
    image specs check their `edf.mounts` with it too."""
    syntax = "SRC:DST[:FLAGS] with FLAGS joined by '+', e.g. /capstor:/capstor:ro+private"
    parts = text.split(":")
    if len(parts) > 3 or any(p == "" for p in parts[:2]):
        return None, [("error", f"'{text}' is not {syntax}")]
    src, dst = parts[0], parts[1] if len(parts) > 1 else parts[0]
    flags = tuple(parts[2].split("+")) if len(parts) == 3 and parts[2] else ()
    problems: list[Problem] = []
    if len(parts) == 1 and not src.startswith("/"):  # short form: the same path on both sides
        return None, [("error", f"'{src}' must be an absolute path (PATH alone mounts PATH at PATH)")]
    if not is_path(src):
        problems.append(("error", f"source '{src}' must be an absolute path or start with ./"))
    if not dst.startswith("/"):
        problems.append(("error", f"destination '{dst}' must be an absolute path inside the container"))
    elif ".." in dst.split("/"):
        problems.append(("error", f"destination '{dst}' must not contain '..'"))
    for flag in flags:
        if flag == "":
            problems.append(("error", f"empty flag in '{parts[2]}' (flags are joined by a single '+')"))
        elif flag != SQSH and flag not in BIND_FLAGS:
            allowed = f"'{SQSH}' alone, or bind options: {', '.join(BIND_FLAGS)}"
            problems.append(("error", f"unknown mount flag '{flag}'; allowed: {allowed}"))
    if SQSH in flags and len(flags) > 1:
        problems.append(
            ("error", "'sqsh' must be the only flag: with other flags CE does a bind mount (edf.md)")
        )
    if "ro" in flags and "rw" in flags:
        problems.append(("warning", "both 'ro' and 'rw': the later one wins"))
    return Mount(src, dst, flags), problems


def parse_mount(text: str) -> tuple[Mount | None, list[Problem]]:
    """mount_syntax, then what only this machine can tell: a relative source resolved against the
    working directory, a squashfs source checked to be one."""
    mount, problems = mount_syntax(text)
    if mount is None:
        return None, problems
    src = resolve_relative(mount.src)
    if mount.flags == (SQSH,):
        problems.extend(_squashfs_file(src, "squashfs mount source"))
    return mount._replace(src=src), problems


def _homes(environ: Mapping[str, str]) -> set[str]:
    """The user's home directory under every name it may go by: $HOME, /users/$USER (CSCS), and
    the home in the passwd entry of $USER (or of this process's user)."""
    import pwd

    homes = {environ.get("HOME", "")}
    user = environ.get("USER", "")
    if user:
        homes.add(f"/users/{user}")
    try:
        homes.add(pwd.getpwnam(user).pw_dir if user else pwd.getpwuid(os.getuid()).pw_dir)
    except (KeyError, ValueError):  # no such user; a NUL in the name
        pass
    return {os.path.normpath(h) for h in homes if h.startswith("/") and os.path.normpath(h) != "/"}


def whole_home(written: str, source: str, environ: Mapping[str, str]) -> list[Problem]:
    """A warning when a mount's source is the user's whole home directory (`written` as in the
    file, `source` after ${VAR} expansion): `$HOME`, `${HOME}`, `~`, `/users/$USER` or the home
    itself. CSCS guidance (cscs-docs container-engine/run.md, storage guide): mount only the
    subdirectories a job needs; all of $HOME brings every dotfile, cache and credential into the
    container and ties the job to the home filesystem."""
    if not source:  # HOME empty or unset: the empty source is an error of its own
        return []
    literal = written.rstrip("/") in ("$HOME", "${HOME}", "~")
    expanded = source.startswith("/") and os.path.normpath(source) in _homes(environ)
    if not (literal or expanded):
        return []
    return [("warning", f"source {source} mounts all of $HOME: mount only the subdirectories the job "
                        f"needs (e.g. {source.rstrip('/')}/project:/project)")]  # fmt: skip


def _squashfs_file(path: str, what: str) -> list[Problem]:
    """A missing file is a warning: the check may run on another machine than the job."""
    if not os.path.lexists(path):
        return [("warning", f"{what} {path} does not exist on this machine")]
    if os.path.isdir(path):
        return [("error", f"{what} {path} is a directory, not a squashfs file")]
    try:  # non-blocking and regular files only: a FIFO here would hang the check
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return [("error", f"{what} {path} is not a regular file, so not a squashfs file")]
            magic = os.read(fd, 4)
        finally:
            os.close(fd)
    except OSError as e:
        return [("warning", f"{what} {path} cannot be read here: {e.strerror}")]
    if magic != SQUASHFS_MAGIC:
        return [("error", f"{what} {path} is not a squashfs file (no 'hsqs' magic)")]
    return []


def check_image(image: str) -> tuple[str, list[Problem]]:
    """-> (image with relative paths made absolute, problems). Empty is checked on the merged EDF."""
    if image == "":
        return image, []
    if is_path(image):
        path = resolve_relative(image)
        return path, _squashfs_file(path, "image")
    if EDF_IMAGE_REF.fullmatch(image) is None:
        return image, [
            (
                "error",
                f"'{image}' is neither a path to a squashfs file nor an image reference "
                "[USER@][REGISTRY#]IMAGE[:TAG] (IMAGE: lowercase letters, digits, '.', '_', '-', "
                "'/'; e.g. nvcr.io#nvidia/pytorch:25.06-py3)",
            )
        ]
    return image, []


def check_annotation(key: str, value: str) -> list[Problem]:
    if key not in KNOWN_ANNOTATIONS:
        return [("warning", "unknown annotation: no hook documented by CSCS reads it (typo?)")]
    allowed = KNOWN_ANNOTATIONS[key]
    if key == "com.hooks.aws_ofi_nccl.variant" and value in OFI_OLD_VARIANTS:
        return [("warning", f"'{value}' is no longer listed; variants now: {', '.join(OFI_VARIANTS)}")]
    if allowed is not None and value not in allowed:
        return [("error", f"'{value}' is not allowed; allowed: {', '.join(repr(a) for a in allowed)}")]
    if key == "com.hooks.ssh.authorize_ssh_key":
        if _SSH_KEY_TEXT.match(value):
            return [("error", "must be the path to a file holding the public key, not the key itself")]
        if not value.startswith("/"):
            return [("error", f"'{value}' must be an absolute path to the public key file")]
    port = as_int(value) if value.isascii() and value.isdigit() else None  # digits only, bounded
    if key == "com.hooks.ssh.port" and not (port is not None and 0 < port < 65536):
        return [("error", f"'{value}' is not a port number (1-65535; default 15263)")]
    if key == "com.hooks.netstack.source" and not (
        value in ("host", "artifact") or (value.startswith("artifact:") and len(value) > 9)
    ):
        return [("error", f"'{value}' is not allowed; allowed: 'host', 'artifact', 'artifact:<version>'")]
    if allowed is None and value == "":
        return [("error", "must not be empty")]
    return []


def check_env_name(name: str) -> list[Problem]:
    if name == "":
        return [("error", "empty variable name")]
    if ENV_NAME_RE.fullmatch(name) is None:
        return [("warning", f"'{name}' is not a portable variable name (letters, digits, '_')")]
    return []


def check_merged(
    image: str, writable: bool, env: Mapping[str, str], annotations: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """Rules across fields of the resolved EDF -> (field, severity, message)."""
    found: list[tuple[str, str, str]] = []
    on = {k for k, v in annotations.items() if k.endswith(".enabled") and v == "true"}
    if image == "":
        found.append(("image", "warning", "no image: the Container Engine will not enter a container"))
    for hook in ("com.hooks.ssh", "com.hooks.nvidia_cuda_mps"):
        if f"{hook}.enabled" in on and not writable:
            found.append(("writable", "error", f"{hook} needs a writable container (resource-hook.md)"))
    if "com.hooks.ssh.enabled" in on and "com.hooks.ssh.authorize_ssh_key" not in annotations:
        msg = "ssh hook on without a key to authorize"
        found.append(("annotations.com.hooks.ssh.authorize_ssh_key", "warning", msg))
    variant = "com.hooks.aws_ofi_nccl.variant"
    artifact = annotations.get("com.hooks.netstack.source", "").startswith("artifact")
    if "com.hooks.aws_ofi_nccl.enabled" in on:
        if artifact and variant in annotations:
            msg = "ignored: network stack artifacts use dynamically linked plugins (resource-hook.md)"
            found.append((f"annotations.{variant}", "warning", msg))
        elif not artifact and variant not in annotations:
            msg = f"hook on without a variant ({', '.join(OFI_VARIANTS)}): the site default applies"
            found.append((f"annotations.{variant}", "warning", msg))
        if env.get("NCCL_NET_PLUGIN"):
            msg = "the aws_ofi_nccl hook sets NCCL_NET_PLUGIN to the plugin it mounts; this may load another"
            found.append(("env.NCCL_NET_PLUGIN", "warning", msg))
    if env.get("NCCL_NET") and env.get("NCCL_NET_PLUGIN"):
        msg = "set together with NCCL_NET: NCCL can then fail with 'network AWS Libfabric not found'"
        found.append(("env.NCCL_NET_PLUGIN", "warning", msg))
    return found
