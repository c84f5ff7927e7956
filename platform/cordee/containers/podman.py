"""The podman driver: the containers.conf a host needs, logged subprocesses (alone or piped) with
timeouts, atomic file writes, and the few podman calls the build and `cordee edf run` make.

crun refuses hosts with legacy or hybrid cgroups, and podman's default ulimits (nofile=1048576)
are above the hard limits of many hosts, so runc fails to start the container ("error setting
rlimits"). Where the host needs it, podman gets a containers.conf that cordee writes (runc,
cgroupfs, file events, no network namespace, ulimits at the host's hard limits) through
$CONTAINERS_CONF; the user's own configuration is never written, and a CONTAINERS_CONF the
user set wins (ARCHITECTURE.md, "How tests start real components").
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

from cordee import process
from cordee.errors import EXIT_UNKNOWN, CordeeError, InputError
from cordee.fileio import write_atomic

QUERY_TIMEOUT = 60  # podman image exists/inspect, create, rm: seconds
KILL_GRACE = 10  # SIGTERM, then SIGKILL after this many seconds


class StepError(CordeeError):
    """A build step (podman, debootstrap, pip, mksquashfs) failed: exit 2, one line."""


class StepTimeout(CordeeError):
    """A build step ran past its time limit and was stopped: exit 3."""

    exit_code = EXIT_UNKNOWN


def cgroup_mode(root: str = "/sys/fs/cgroup") -> str:
    """'unified' (cgroup v2 only), 'hybrid' (v1 controllers plus a v2 mount) or 'legacy' (v1)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "unified"
    if os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        return "hybrid"
    return "legacy"


def _hard_limit(which: int, cap: int, kernel_max: str) -> int:
    hard = resource.getrlimit(which)[1]
    limit = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    try:
        with open(kernel_max) as f:
            return min(limit, int(f.read()))
    except (OSError, ValueError):
        return limit


def containers_conf_text() -> str:
    """runc + cgroupfs, and ulimits the host can grant (podman asks for 1048576 open files).
    nproc is also held to kernel.pid_max: measured on a host with a hard limit of 96365 and
    pid_max 32768, podman's own processes ran with 32768 and runc refused anything above it."""
    nofile = _hard_limit(resource.RLIMIT_NOFILE, 1048576, "/proc/sys/fs/nr_open")
    nproc = _hard_limit(resource.RLIMIT_NPROC, 4194304, "/proc/sys/kernel/pid_max")
    return (
        "# Written by cordee (cordee.containers.podman) for a host with cgroup v1/hybrid or without crun.\n"
        "[containers]\n"
        'netns = "none"\n'
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


def needs_own_conf(mode: str | None = None, has_crun: bool | None = None) -> bool:
    mode = cgroup_mode() if mode is None else mode
    has_crun = shutil.which("crun") is not None if has_crun is None else has_crun
    return mode != "unified" or not has_crun


def cache_dir(environ, name: str) -> Path:
    """$XDG_CACHE_HOME/cordee/NAME (default ~/.cache/cordee/NAME): podman's containers.conf, the
    unpacked squashfs images of `cordee edf run`."""
    home = environ.get("HOME") or os.path.expanduser("~")
    return Path(environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "cordee", name)


def podman_environ(environ=None, *, needed: bool | None = None) -> dict[str, str]:
    """The environment to run podman with: CONTAINERS_CONF pointed at cordee's file if the host
    needs it and the user has not chosen one."""
    env = dict(os.environ if environ is None else environ)
    if env.get("CONTAINERS_CONF") or not (needs_own_conf() if needed is None else needed):
        return env
    path = cache_dir(env, "podman") / "containers.conf"
    text = containers_conf_text()
    try:
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)
    except OSError as e:
        raise InputError(
            f"cannot write {path} (podman's configuration for this host): {e.strerror}; "
            "set XDG_CACHE_HOME to a writable directory, or CONTAINERS_CONF to your own file"
        ) from None
    env["CONTAINERS_CONF"] = str(path)
    return env


class _LogLines:
    """A child's output line by line: into the log, the last lines kept for the error message,
    those for which show(line) holds also on stderr (progress)."""

    def __init__(self, log: IO[str], show: Callable[[str], bool] = lambda line: False) -> None:
        self.log = log
        self.show = show
        self.tail: deque[str] = deque(maxlen=5)

    def __call__(self, line: str) -> None:
        self.log.write(line if line.endswith("\n") else line + "\n")
        self.tail.append(line.rstrip())
        if self.show(line):
            print(f"  {line.rstrip()}", file=sys.stderr, flush=True)

    def last(self) -> str:
        return " | ".join(t for t in self.tail if t.strip())


def _ending(result: process.Result) -> str:
    return f"killed by {result.signal}" if result.signal else f"exit {result.returncode}"


def run_logged(
    argv: list[str],
    *,
    what: str,
    timeout: float,
    log: IO[str],
    env: dict[str, str] | None = None,
    show: Callable[[str], bool] = lambda line: False,
    stdin=process.DEVNULL,
    cwd: str | None = None,
) -> None:
    """Run argv with stdout+stderr into `log`; lines for which show(line) holds also go to stderr
    (progress). Stops the whole process group after `timeout` seconds (cordee.process: SIGTERM,
    SIGKILL after KILL_GRACE). Raises StepError naming `what` with the last lines of output, or
    StepTimeout."""
    log.write(f"\n== {what}: {' '.join(argv)}\n")
    log.flush()
    lines = _LogLines(log, show)
    try:
        run = process.run(
            argv,
            timeout=timeout,
            grace=KILL_GRACE,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=lines,
            stderr=process.STDOUT,
        )
    except FileNotFoundError as e:
        raise StepError(f"{what}: {argv[0]} is not installed ({e.strerror})") from None
    finally:
        log.flush()
    if run.timed_out:
        raise StepTimeout(f"{what}: no result within {timeout:.0f}s, stopped (full log: {log.name})")
    if run.returncode != 0:
        raise StepError(f"{what} failed ({_ending(run)}): {lines.last()} (full log: {log.name})")


def run_piped(
    source: list[str],
    argv: list[str],
    *,
    source_what: str,
    what: str,
    timeout: float,
    log: IO[str],
    source_env: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """`source | argv` (tar into podman import, podman export into tar), on cordee.process's
    pipeline: one deadline for both. argv's output is logged as run_logged does, and its error is
    reported first (a source stopped by the closed pipe would only echo it). source's stderr goes
    to the log and into a StepError of its own. On any failure the source is stopped with its
    process group."""
    log.write(f"\n== {source_what} | {what}: {' '.join(source)} | {' '.join(argv)}\n")
    log.flush()
    lines = _LogLines(log)
    try:
        src, run = process.pipeline(
            source,
            argv,
            timeout=timeout,
            grace=KILL_GRACE,
            linger=QUERY_TIMEOUT,  # the sink read to the end: the source is finishing
            source_env=source_env,
            env=env,
            stdout=lines,
            stderr=process.STDOUT,
        )
    except FileNotFoundError as e:
        # the source starts first: the sink is the one missing only when the source was found
        side, tool = (source_what, source[0]) if e.filename == source[0] else (what, argv[0])
        raise StepError(f"{side}: {tool} is not installed ({e.strerror})") from None
    finally:
        log.flush()
    if src.stderr:
        log.write(f"-- {source_what} (stderr):\n{src.stderr}")
        log.flush()
    if run.timed_out:
        raise StepTimeout(f"{what}: no result within {timeout:.0f}s, stopped (full log: {log.name})")
    if run.returncode != 0:
        raise StepError(f"{what} failed ({_ending(run)}): {lines.last()} (full log: {log.name})")
    if src.timed_out:
        raise StepTimeout(f"{source_what}: no result within {timeout:.0f}s, stopped (full log: {log.name})")
    if src.returncode != 0:
        last = " ".join(src.stderr.split())[-300:]
        raise StepError(f"{source_what} failed ({_ending(src)}): {last} (full log: {log.name})")


class Podman:
    """podman with the host's configuration; every call has a timeout."""

    def __init__(self, environ=None, exe: str = "podman") -> None:
        self.exe = exe
        self.env = podman_environ(environ)

    def available(self) -> bool:
        return shutil.which(self.exe, path=self.env.get("PATH")) is not None

    def call(self, *args: str, timeout: float = QUERY_TIMEOUT, check: bool = True) -> process.Result:
        """podman ARGS with its output captured (Result: returncode, stdout, stderr)."""
        argv = [self.exe, *args]
        try:
            cp = process.run(argv, env=self.env, timeout=timeout, grace=KILL_GRACE)
        except FileNotFoundError:
            raise StepError(f"podman is not installed (needed for: {' '.join(args[:2])})") from None
        if cp.timed_out:
            raise StepTimeout(f"podman {' '.join(args[:2])}: no answer within {timeout:.0f}s")
        if check and cp.returncode != 0:
            err = " ".join(cp.stderr.split())[-300:] or f"exit {cp.returncode}"
            raise StepError(f"podman {' '.join(args[:2])} failed: {err}")
        return cp

    def image_exists(self, ref: str) -> bool:
        return self.call("image", "exists", ref, check=False).returncode == 0

    def inspect_image(self, ref: str) -> dict:
        return json.loads(self.call("image", "inspect", ref).stdout)[0]

    def build(
        self,
        context: Path,
        containerfile: Path,
        tag: str,
        *,
        log: IO[str],
        timeout: float,
        platform: str | None = None,
        network: bool = False,
    ) -> None:
        """`podman build --network=none`: everything the build needs is in the context already;
        with network=True the host's network (recipes that fetch checksummed sources or use apt)."""
        net = "--network=host" if network else "--network=none"
        argv = [self.exe, "build", net, "--layers", "-t", tag, "-f", str(containerfile)]
        if platform:
            argv += ["--platform", platform]
        run_logged(
            [*argv, str(context)],
            what=f"podman build {tag}",
            timeout=timeout,
            log=log,
            env=self.env,
            show=lambda line: STEP_LINE.match(line) is not None,
        )


STEP_LINE = re.compile(r"^(STEP \d+/\d+:|COMMIT |Successfully tagged )")


def host_platform() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"linux/{arch}"
