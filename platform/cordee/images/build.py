"""`cordee image build NAME` (= `make image IMAGE=NAME`): spec -> build/NAME/ -> podman image ->
.sqsh -> EDF in $EDF_PATH.

Steps: render; cache check (build/NAME/.built has the same content key, the podman tag and the
.sqsh exist); base (debootstrap + import, or a registry base that must already be local: builds
run with --network=none and registries cannot be reached offline); wheelhouse (the host's pip
downloads wheels for the image, so the build itself needs no network); podman build; squashfs
export; EDF install. One line per step on stderr, everything in build/NAME/build.log. The EDF is
installed on cache hits too, so a new $EDF_PATH gets it without a rebuild.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from cordee.containers.podman import Podman, StepTimeout, host_platform, run_logged
from cordee.errors import InputError
from cordee.fileio import write_atomic

BUILD_TIMEOUT = 3600  # podman build: pip install of torch and friends, offline, ~2 min here
PIP_TIMEOUT = 1800
LOCK_TIMEOUT = 3 * BUILD_TIMEOUT
SCHEMA = "cordee.imagebuild/1"
STEPS = 7
MACHINES = {"linux/arm64": "aarch64", "linux/amd64": "x86_64"}  # podman platform -> uname -m


def edf_dir(environ=os.environ) -> Path:
    """The first directory `srun --environment=NAME` searches (cordee.edf.load.find_edf too): the
    first absolute entry of $EDF_PATH (colon separated; relative ones are skipped there), default
    $HOME/.edf, as the Container Engine."""
    from cordee.edf.load import edf_search_path

    first = next((p for p in edf_search_path(environ) if os.path.isabs(p)), None)
    if first is None:
        raise InputError(
            f"EDF_PATH={environ['EDF_PATH']}: no absolute directory to install the EDF into "
            "(relative entries are skipped when an EDF is looked up)"
        )
    return Path(first)


def install_edf(name: str, text: str, environ=os.environ) -> Path:
    path = edf_dir(environ) / f"{name}.toml"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as e:
        raise InputError(
            f"cannot install the EDF {path} (first directory of EDF_PATH): {e.strerror}"
        ) from None
    return path


def _say(name: str, step: int, text: str) -> None:
    print(f"cordee image build {name}: [{step}/{STEPS}] {text}", file=sys.stderr, flush=True)


@contextmanager
def _build_lock(path: Path, name: str):
    """One build of NAME at a time (make demo and the tests may start one together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        deadline = time.monotonic() + LOCK_TIMEOUT
        waited = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    print(f"cordee image build {name}: waiting for another build of it", file=sys.stderr)
                    waited = True
                if time.monotonic() > deadline:
                    raise StepTimeout(
                        f"image {name}: another build held {path} for {LOCK_TIMEOUT}s"
                    ) from None
                time.sleep(1)
        yield


def read_built(build_dir: Path) -> dict:
    try:
        return json.loads((build_dir / ".built").read_text())
    except (OSError, ValueError):
        return {}


def cache_hit(plan: dict, build_dir: Path, podman: Podman) -> bool:
    built = read_built(build_dir)
    return (
        built.get("content_key") == plan["content_key"]
        and built.get("tag") == plan["tag"]
        and Path(plan["sqsh"]).is_file()
        and podman.image_exists(plan["tag"])
    )


def check_base(plan: dict, podman: Podman, *, log, workdir: Path, mirror: str | None, environ) -> bool:
    base = plan["base"]
    if base["kind"] == "debootstrap":
        if plan.get("platform") and plan["platform"] != host_platform():
            raise InputError(
                f"image {plan['name']}: a debootstrap base is made for this machine ({host_platform()}), "
                f"not {plan['platform']}: build it on a {plan['platform']} machine"
            )
        from cordee.images.base import ensure_base

        return ensure_base(base, podman, log=log, workdir=workdir, mirror=mirror, environ=environ)
    if not podman.image_exists(base["ref"]):
        plat = f" --platform {base['platform']}" if base.get("platform") else ""
        raise InputError(
            f"image {plan['name']}: base {base['ref']} is not in local podman storage and builds run "
            f"offline; on a machine with registry access run `podman pull{plat} {base['ref']}` "
            "(or podman load it here)"
        )
    return False


def check_platform(plan: dict) -> str | None:
    """The --platform to pass: only when it differs from this machine, and only if it can run."""
    wanted = plan.get("platform")
    if not wanted or wanted == host_platform():
        return None
    arch = MACHINES.get(wanted, wanted.split("/")[-1])
    if not os.path.exists(f"/proc/sys/fs/binfmt_misc/qemu-{arch}"):
        raise InputError(
            f"image {plan['name']}: platform {wanted} differs from this machine ({host_platform()}) and no "
            f"qemu-{arch} binfmt handler is registered: install qemu-user-static, or build on {wanted}"
        )
    return wanted


def _pip_platform_args(platform: str | None) -> list[str]:
    if not platform:
        return []
    arch = MACHINES[platform]
    tags = [f"manylinux_2_{v}_{arch}" for v in (17, 28, 34)] + [f"manylinux2014_{arch}", f"linux_{arch}"]
    return [a for t in tags for a in ("--platform", t)] + ["--python-version=3.11", "--implementation=cp"]


def fill_wheelhouse(wheelhouse: dict, wheels: Path, root: Path, *, log, platform: str | None) -> None:
    """build/NAME/wheels/: the requirements (binary wheels only; kept while they are unchanged)
    and a fresh wheel of cordee from this checkout."""
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    reqs = list(wheelhouse.get("requirements") or [])
    stamp = wheels / ".requirements.json"
    key = json.dumps({"requirements": reqs, "platform": platform}, sort_keys=True)
    if reqs and not (stamp.is_file() and stamp.read_text() == key):
        for old in wheels.glob("*.whl"):
            old.unlink()
        argv = [
            *pip,
            "download",
            "--only-binary=:all:",
            "-d",
            str(wheels),
            *_pip_platform_args(platform),
            *reqs,
        ]
        shown = ("Saved ", "ERROR")
        run_logged(
            argv, what="pip download", timeout=PIP_TIMEOUT, log=log, show=lambda line: line.startswith(shown)
        )
        write_atomic(stamp, key)
    if wheelhouse.get("cordee"):
        for old in wheels.glob("cordee-*.whl"):
            old.unlink()
        with tempfile.TemporaryDirectory(prefix="cordee-src-") as src:
            _copy_source(root, Path(src))  # setuptools writes build/ and *.egg-info into its source
            argv = [*pip, "wheel", "-w", str(wheels), src]  # + its pure-Python dependencies (click)
            run_logged(argv, what="pip wheel cordee", timeout=PIP_TIMEOUT, log=log)


def _copy_source(root: Path, dst: Path) -> None:
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        if (root / name).is_file():
            shutil.copy2(root / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(root / "platform", dst / "platform", ignore=ignore)


def _uenv_summary(spec, plan: dict, build_dir: Path) -> dict:
    recipe = build_dir / (plan.get("uenv") or {}).get("recipe", "uenv")
    work = f"/dev/shm/$USER/{spec.name}"
    print(
        f"cordee image build {spec.name}: uenv recipe rendered to {recipe}; uenv images are built on "
        "the target system with stackinator and spack (not by podman):\n"
        f"  stack-config --build {work} --recipe {recipe} --system CLUSTER-CONFIG-DIR\n"
        f"  cd {work} && env --ignore-environment PATH=/usr/bin:/bin:$PWD/spack/bin HOME=$HOME "
        "make store.squashfs -j32",
        file=sys.stderr,
    )
    return {"schema": SCHEMA, "name": spec.name, "kind": "uenv", "built": False, "recipe": str(recipe)}


def build_image(
    name: str, *, root: Path | None = None, force: bool = False, mirror: str | None = None, environ=None
) -> dict:
    """Build image NAME; returns the cordee.imagebuild/1 summary."""
    from cordee.images.render import render_image
    from cordee.images.spec import find_root, load_spec

    environ = os.environ if environ is None else environ
    root = Path(root) if root else find_root()
    spec = load_spec(name, root)
    build_dir = root / "build" / spec.name
    t_start = time.monotonic()
    with _build_lock(root / "build" / f".{spec.name}.lock", spec.name):
        _say(spec.name, 1, f"render {spec.path} -> {build_dir}")
        plan = render_image(spec, build_dir).plan
        if spec.kind == "uenv":
            return _uenv_summary(spec, plan, build_dir)
        edf_dir(environ)  # a bad EDF_PATH fails now, not after the build
        podman = Podman(environ)
        if not podman.available():
            raise InputError(f"image {spec.name}: podman is not installed (apt-get install podman runc)")
        sqsh = Path(plan["sqsh"])
        hit = not force and cache_hit(plan, build_dir, podman)
        if hit:
            built = read_built(build_dir)
            key = plan["content_key"][:12]
            _say(
                spec.name,
                2,
                f"cache hit: {plan['tag']} and {sqsh} match content key {key} (--force rebuilds)",
            )
        else:
            previous = read_built(build_dir).get("image_id")
            timings = _build(spec.name, plan, build_dir, root, podman, mirror=mirror, environ=environ)
            image = podman.inspect_image(plan["tag"])
            built = {
                "schema": "cordee.built/1",
                "content_key": plan["content_key"],
                "tag": plan["tag"],
                "sqsh": str(sqsh),
                "sqsh_bytes": sqsh.stat().st_size,
                "image_bytes": int(image.get("Size", 0)),
                "image_id": image["Id"],
                "timings": timings,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_atomic(build_dir / ".built", json.dumps(built, indent=2, sort_keys=True) + "\n")
            if previous and previous != built["image_id"]:  # each rebuild leaves a ~1 GB image behind
                podman.call("rmi", previous, check=False)
        # the EDF render_image wrote next to the Containerfile, pointing at this very .sqsh
        edf = install_edf(spec.name, (build_dir / plan["edf"]).read_text(), environ)
        _say(
            spec.name,
            STEPS,
            f"EDF installed: {edf} (cordee edf run {spec.name} -- CMD; srun --environment={spec.name})",
        )
    return {
        "schema": SCHEMA,
        "name": spec.name,
        "kind": "container",
        "tag": plan["tag"],
        "content_key": plan["content_key"],
        "cache_hit": hit,
        "sqsh": str(sqsh),
        "sqsh_bytes": built.get("sqsh_bytes"),
        "image_bytes": built.get("image_bytes"),
        "edf": str(edf),
        "log": str(build_dir / "build.log"),
        "seconds": round(time.monotonic() - t_start, 3),
        "build_timings": built.get("timings"),  # of the build that made the cached image
    }


def _build(name: str, plan: dict, build_dir: Path, root: Path, podman: Podman, *, mirror, environ) -> dict:
    timings: dict[str, float] = {}
    with open(build_dir / "build.log", "w", buffering=1) as log:
        log.write(f"cordee image build {name}: tag {plan['tag']}, content key {plan['content_key']}\n")
        t = time.monotonic()
        base = plan["base"]
        _say(name, 2, f"base {base.get('tag') or base.get('ref')} ({base['kind']})")
        made = check_base(plan, podman, log=log, workdir=root / "build", mirror=mirror, environ=environ)
        timings["base_s"] = round(time.monotonic() - t, 3)
        platform = check_platform(plan)  # after the base: a missing base is the first thing to fix
        _say(name, 2, f"base {'built' if made else 'present'} in {timings['base_s']:.1f}s")
        t = time.monotonic()
        if plan.get("wheelhouse"):
            _say(name, 3, f"wheelhouse {build_dir / 'wheels'}")
            fill_wheelhouse(plan["wheelhouse"], build_dir / "wheels", root, log=log, platform=platform)
        timings["wheels_s"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        network = bool(plan.get("build_network"))  # sources, apt or an index: the plan says so
        _say(name, 4, f"podman build -t {plan['tag']}{' with network' if network else ''} (log: {log.name})")
        containerfile = build_dir / "Containerfile"
        podman.build(
            build_dir,
            containerfile,
            plan["tag"],
            log=log,
            timeout=BUILD_TIMEOUT,
            platform=platform,
            network=network,
        )
        timings["podman_build_s"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        _say(name, 5, f"squashfs export -> {plan['sqsh']}")
        from cordee.images.squashfs import export_squashfs

        export_squashfs(podman, plan["tag"], Path(plan["sqsh"]), log=log)
        timings["export_s"] = round(time.monotonic() - t, 3)
        mib = Path(plan["sqsh"]).stat().st_size / 2**20
        _say(name, 6, f"built in {sum(timings.values()):.1f}s: {mib:.0f} MiB squashfs")
    return timings
