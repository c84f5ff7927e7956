"""`cordee edf run NAME_OR_FILE -- CMD`: run an EDF on a workstation through podman, the way the
Container Engine would on the cluster, so users can try an environment before they queue.

Image: an absolute `.sqsh` path is mounted with squashfuse (or, where FUSE does not work,
unpacked once with unsquashfs into a cache keyed by path, size and mtime) and run with
`podman run --rootfs DIR:O` (an overlay: the squashfs itself stays read-only); its environment and
workdir come from Enroot's /etc/environment and /etc/rc. An image reference
`[USER@][REGISTRY#]IMAGE[:TAG]` must be a local podman tag. Mounts, `[env]`, workdir, writable
and entrypoint are honoured; the network is the host's, as with CE. Mounts are always undone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cordee import process
from cordee.containers.enroot_layout import read_image_env, read_image_workdir
from cordee.containers.podman import Podman, StepError, StepTimeout, cache_dir
from cordee.errors import InputError

MOUNT_TIMEOUT = 60
STOP_GRACE = 5  # a stopped `podman run`: SIGTERM (passed on to CMD), SIGKILL this many seconds later
UNSQUASH_TIMEOUT = 1800
# EDF bind flags (Enroot's fstab options) that podman's -v takes as they are
PODMAN_FLAGS = set(
    "ro rw private rprivate shared rshared slave rslave unbindable runbindable nosuid suid nodev dev "
    "noexec exec bind rbind".split()
)
# ...and those with no meaning for a local try-out run (podman creates the destination itself)
IGNORED_FLAGS = set(
    "x-create=dir x-create=file x-create=auto silent loud noatime atime nodiratime diratime relatime "
    "norelatime strictatime nostrictatime lazytime nolazytime sync async dirsync".split()
)
REFERENCE = re.compile(
    r"^(?:(?P<user>[^@#/:]+)@(?!sha256:))?(?:(?P<registry>[^#@/]+)#)?(?P<image>[a-z0-9][a-z0-9._/-]*)"
    r"(?::(?P<tag>\w[\w.-]*))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


# Not carried into the container: they describe this shell or podman, not the job
HOST_ONLY = frozenset({"_", "OLDPWD", "PWD", "SHLVL", "CONTAINERS_CONF", "TERM"})


def image_config_env(inspect: dict) -> dict[str, str]:
    """The Env of `podman image inspect` (a list of KEY=VALUE) as a dict."""
    pairs = (item.partition("=") for item in (inspect.get("Config") or {}).get("Env") or [])
    return {k: v for k, _, v in pairs if k}


class RunTimeout(StepTimeout):
    """CMD, or mounting its squashfs, ran past its time limit: exit 3."""


def local_tag(reference: str) -> str:
    """`[USER@][REGISTRY#]IMAGE[:TAG]` -> the podman name `registry/image:tag` (`localhost/` when
    no registry is named; an IMAGE that already starts with a registry host keeps it)."""
    m = REFERENCE.match(reference)
    if m is None:
        raise InputError(
            f"EDF image {reference!r}: expected an absolute .sqsh path or [USER@][REGISTRY#]IMAGE[:TAG]"
        )
    image, registry = m.group("image"), m.group("registry")
    if registry is None:
        first = image.split("/", 1)[0]
        registry = (
            "" if "/" in image and ("." in first or ":" in first or first == "localhost") else "localhost"
        )
    name = f"{registry + '/' if registry else ''}{image}"
    if m.group("digest"):
        return f"{name}@{m.group('digest')}"
    return f"{name}:{m.group('tag') or 'latest'}"


def _volume(src: str, dst: str, flags: list[str], what: str) -> list[str]:
    unknown = [f for f in flags if f not in PODMAN_FLAGS | IGNORED_FLAGS | {"nofail"}]
    if unknown:
        allowed = ", ".join(sorted(PODMAN_FLAGS | IGNORED_FLAGS | {"nofail", "sqsh"}))
        raise InputError(
            f"{what}: mount flag(s) {'+'.join(unknown)} not supported locally (allowed: {allowed})"
        )
    if not dst.startswith("/"):
        raise InputError(f"{what}: destination {dst!r} must be an absolute path")
    opts = [f for f in flags if f in PODMAN_FLAGS and f != "bind"]
    return ["-v", f"{src}:{dst}" + (":" + ",".join(opts) if opts else "")]


def podman_argv(
    edf,
    cmd: list[str],
    rootfs_or_tag: str,
    *,
    image_env: dict[str, str] | None = None,
    image_workdir: str | None = None,
    host_env: dict[str, str] | None = None,
    name: str | None = None,
    terminal: bool = False,
) -> list[str]:
    """The `podman run` command line for `edf` running `cmd` (pure). `rootfs_or_tag`: a directory
    (absolute path: run with --rootfs DIR:O) or a podman tag. Mounts with the `sqsh` flag must have
    been replaced by their mounted directory already (run_edf does that). For a rootfs, the image's
    environment and workdir (from its /etc/environment and /etc/rc) come as image_env/image_workdir.
    As under CE, the container's environment is the host's (host_env), then the image's, then the
    EDF's [env], each overriding the one before."""
    # -i: stdin reaches CMD (`... | cordee edf run X -- python -`); a tty only when we have one
    argv = ["podman", "run", "--rm", "--network=host", "--pull=never", "-i"]
    if terminal:
        argv.append("-t")
    if name:
        argv += ["--name", name]
    rootfs = rootfs_or_tag.startswith("/")
    if not edf.writable:
        argv.append("--read-only")
    env = {k: v for k, v in (host_env or {}).items() if k not in HOST_ONLY}
    env.update(image_env or {})
    unset = []
    for key, value in edf.env.items():
        if value == "":  # EDF: "" unsets the variable
            env.pop(key, None)
            unset.append(key)
        else:
            env[key] = value
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    if not rootfs:
        argv += [f"--unsetenv={key}" for key in unset]
    for m in edf.mounts:
        what = f"EDF {edf.path}: mount {m.src}:{m.dst}"
        if "sqsh" in m.flags:
            raise InputError(f"{what}: the squashfs must be mounted before podman_argv (use run_edf)")
        argv += _volume(m.src, m.dst, list(m.flags), what)
    workdir = edf.workdir or (image_workdir if rootfs else None)
    if workdir:
        argv += ["-w", workdir]
    command = list(cmd)
    if rootfs:
        if edf.entrypoint:  # Enroot's entrypoint is /etc/rc: it cds, then execs entrypoint "$@"
            command = ["/bin/sh", "/etc/rc", *command]
        return [*argv, "--rootfs", f"{rootfs_or_tag}:O", *command]
    if not edf.entrypoint:
        argv.append("--entrypoint=[]")
    return [*argv, rootfs_or_tag, *command]


def _run(argv: list[str], what: str, timeout: float) -> process.Result:
    try:
        run = process.run(argv, timeout=timeout)
    except FileNotFoundError:
        return process.Result(tuple(argv), 0, 127, False, "", f"{argv[0]} is not installed", 0.0)
    if run.timed_out:
        raise RunTimeout(f"{what}: no result within {timeout:.0f}s")
    return run


def _unmount(point: str) -> None:
    for argv in (["fusermount3", "-u", point], ["fusermount", "-u", point], ["umount", "-l", point]):
        if shutil.which(argv[0]) and _run(argv, f"unmount {point}", MOUNT_TIMEOUT).returncode == 0:
            return
    raise StepError(f"cannot unmount the squashfs at {point}: undo it with `fusermount -u {point}`")


def fuse_unusable() -> str | None:
    """Why a squashfuse mount cannot even be tried here, or None."""
    if not shutil.which("squashfuse"):
        return "squashfuse is not installed"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "FUSE is not usable here (/dev/fuse missing or not writable)"
    return None


@contextmanager
def squashfs_dir(
    sqsh: str, environ, *, timeout: float = MOUNT_TIMEOUT, cache: bool = True, unpack: bool = True
):
    """A directory with the content of `sqsh`: a squashfuse mount (undone on exit) or, where FUSE
    cannot be used, an unsquashfs copy: kept in the cache for container images (`cache`), or in a
    temporary directory removed on exit for a one-off read (a dataset can be terabytes). With
    unpack=False only the mount will do (a benchmark of the mount): InputError naming why not."""
    if not os.path.isfile(sqsh):
        raise InputError(f"squashfs {sqsh}: no such file")
    why = fuse_unusable()
    if why is None:
        point = tempfile.mkdtemp(prefix="cordee-sqsh-")
        cp = _run(["squashfuse", sqsh, point], f"squashfuse {sqsh}", timeout)
        if cp.returncode == 0 and os.path.ismount(point):
            try:
                yield point
            finally:
                _unmount(point)
                os.rmdir(point)
            return
        os.rmdir(point)  # FUSE present but unusable (e.g. in a container): unpack instead
        why = "squashfuse could not mount the image (FUSE unusable here)"
    if not unpack:
        raise InputError(f"squashfs {sqsh}: {why}")
    if cache:
        yield str(_unsquashed(sqsh, environ))
        return
    tmp = tempfile.mkdtemp(prefix="cordee-unsquashed-")
    try:
        _unsquash(sqsh, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unsquash(sqsh: str, directory: str) -> None:
    cp = _run(
        ["unsquashfs", "-f", "-no-progress", "-d", directory, sqsh], f"unsquashfs {sqsh}", UNSQUASH_TIMEOUT
    )
    if cp.returncode != 0:
        raise InputError(f"squashfs {sqsh}: cannot mount or unpack it: {' '.join(cp.stderr.split())[-200:]}")


def _unsquashed(sqsh: str, environ) -> Path:
    st = os.stat(sqsh)
    key = hashlib.sha256(f"{os.path.abspath(sqsh)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]
    target = cache_dir(environ, "rootfs") / key
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        _unsquash(sqsh, str(tmp))
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def run_edf(
    edf, cmd: list[str], *, environ=os.environ, timeout: float | None = None, host_env: bool = True
) -> int:
    """Run `cmd` in the EDF's environment through podman; returns cmd's exit code. With
    host_env (CE's behaviour) the container starts from `environ`, as a Slurm task would."""
    if not cmd:
        raise InputError(f"EDF {edf.path}: no command to run (cordee edf run NAME -- CMD ...)")
    if not edf.image:
        raise InputError(f"EDF {edf.path}: no image (an EDF without image runs on the host; nothing to try)")
    podman = Podman(environ)
    if not podman.available():
        raise InputError("cordee edf run needs podman (apt-get install podman)")
    name = f"cordee-edf-{uuid.uuid4().hex[:12]}"
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    with ExitStack() as stack:
        mounts = []
        for m in edf.mounts:
            if "sqsh" in m.flags:
                src = stack.enter_context(squashfs_dir(m.src, environ))
                flags = tuple(f for f in m.flags if f not in ("sqsh", "rw", "ro")) + ("ro",)
                m = m._replace(src=src, flags=flags)
            elif not os.path.exists(m.src):
                if "nofail" in m.flags:  # Enroot: a missing source is skipped
                    continue
                raise InputError(f"EDF {edf.path}: mount source {m.src} does not exist")
            mounts.append(m)
        edf = edf._replace(mounts=tuple(mounts))
        if edf.image.startswith("/"):
            if not edf.image.endswith(".sqsh"):
                raise InputError(f"EDF {edf.path}: image {edf.image}: expected a .sqsh file")
            rootfs = stack.enter_context(squashfs_dir(edf.image, environ))
            argv = podman_argv(
                edf,
                cmd,
                rootfs,
                image_env=read_image_env(rootfs),
                image_workdir=read_image_workdir(rootfs),
                host_env=dict(environ) if host_env else None,
                name=name,
                terminal=terminal,
            )
        else:
            tag = local_tag(edf.image)
            if not podman.image_exists(tag):
                raise InputError(
                    f"EDF {edf.path}: image {edf.image} is not available locally (podman tag {tag}); "
                    "build it (cordee image build NAME) or podman pull it"
                )
            argv = podman_argv(
                edf,
                cmd,
                tag,
                image_env=image_config_env(podman.inspect_image(tag)) if host_env else None,
                host_env=dict(environ) if host_env else None,
                name=name,
                terminal=terminal,
            )
        argv[0] = podman.exe
        stop_s = STOP_GRACE  # --rm has removed the container, unless podman itself was stopped (Ctrl-C)
        try:
            # in cordee's own process group: the terminal (its Ctrl-C, its size) stays podman's.
            # At the timeout podman gets SIGTERM (it passes it on to CMD), SIGKILL after the grace
            run = process.run(
                argv,
                env=podman.env,
                timeout=timeout,
                grace=STOP_GRACE,
                stdin=process.INHERIT,
                stdout=process.INHERIT,
                stderr=process.INHERIT,
                isolate="shared",
            )
            if run.timed_out:
                stop_s = 0  # the podman client is gone, the container may not be: remove it by name now
                raise RunTimeout(
                    f"EDF {edf.path}: {' '.join(cmd)} did not finish within {timeout:.0f}s; stopped"
                )
            return run.returncode
        finally:
            podman.call("rm", "-f", "-i", "--time", str(stop_s), name, check=False, timeout=60)
