"""The image build: podman driver (containers.conf for hybrid-cgroup hosts, logged steps with
timeouts), debootstrap base (mirror from apt sources), EDF install, cache, and the CI build of
cpu-ci for real: debootstrap + wheelhouse + podman build + squashfs + EDF, then
`cordee edf run cpu-ci -- cordee env show --json` inside it, and a second build that is a cache
hit (issue 3, "Done means")."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cordee.containers.podman import (
    Podman,
    StepError,
    StepTimeout,
    cgroup_mode,
    containers_conf_text,
    podman_environ,
    run_logged,
    run_piped,
)
from cordee.errors import InputError
from cordee.images import base as base_mod
from cordee.images.build import cache_hit, check_platform, edf_dir, install_edf

ROOT = Path(__file__).resolve().parent.parent
CORDEE = str(Path(sys.executable).with_name("cordee"))


def test_cgroup_mode_from_the_filesystem(tmp_path):
    assert cgroup_mode(str(tmp_path)) == "legacy"
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert cgroup_mode(str(tmp_path)) == "hybrid"
    (tmp_path / "cgroup.controllers").write_text("cpu memory")
    assert cgroup_mode(str(tmp_path)) == "unified"


def test_containers_conf_within_hard_limits():
    text = containers_conf_text()
    assert 'runtime = "runc"' in text and 'cgroup_manager = "cgroupfs"' in text and 'netns = "none"' in text
    limits = dict(
        item.split("=")
        for item in text.split("default_ulimits = [")[1].split("]")[0].replace('"', "").split(", ")
    )
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = (int(x) for x in limits[name].split(":"))
        host_hard = resource.getrlimit(which)[1]
        assert soft == hard and (host_hard == resource.RLIM_INFINITY or hard <= host_hard)


def test_podman_environ_respects_the_user(tmp_path):
    env = podman_environ({"XDG_CACHE_HOME": str(tmp_path), "CONTAINERS_CONF": "/mine.conf"}, needed=True)
    assert env["CONTAINERS_CONF"] == "/mine.conf" and not any(tmp_path.iterdir())
    env = podman_environ({"XDG_CACHE_HOME": str(tmp_path)}, needed=False)
    assert "CONTAINERS_CONF" not in env
    env = podman_environ({"XDG_CACHE_HOME": str(tmp_path)}, needed=True)
    assert Path(env["CONTAINERS_CONF"]).read_text() == containers_conf_text()
    assert Path(env["CONTAINERS_CONF"]).parent == tmp_path / "cordee" / "podman"


def test_run_logged_logs_shows_and_fails_with_the_tail(tmp_path, capsys):
    log_path = tmp_path / "build.log"
    with open(log_path, "w") as log:
        run_logged(  # stderr merged into the log; a last line without its newline still shown
            ["bash", "-c", "echo STEP 1/2: a; echo noise >&2; printf 'STEP 2/2: b'"],
            what="t",
            timeout=30,
            log=log,
            show=lambda line: line.startswith("STEP"),
        )
        with pytest.raises(StepError, match=r"failed \(exit 3\): last words \(full log"):
            run_logged(["bash", "-c", "echo last words; exit 3"], what="failing", timeout=30, log=log)
        with pytest.raises(StepError, match=r"^crash failed \(killed by SIGKILL\): last \(full log"):
            run_logged(["sh", "-c", "echo last; kill -9 $$"], what="crash", timeout=10, log=log)
        t0 = time.monotonic()
        with pytest.raises(StepTimeout, match="slow: no result within 1s"):
            run_logged(["sh", "-c", "echo started; exec sleep 60"], what="slow", timeout=1, log=log)
        assert time.monotonic() - t0 < 5
    assert capsys.readouterr().err.splitlines() == ["  STEP 1/2: a", "  STEP 2/2: b"]
    text = log_path.read_text()
    assert "noise\n" in text and "STEP 2/2: b\n" in text and "started\n" in text
    assert "== failing: bash -c" in text


def test_run_logged_timeout_stops_the_whole_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    t0 = time.monotonic()
    with open(tmp_path / "log", "w") as log, pytest.raises(StepTimeout, match="no result within 1s"):
        run_logged(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], what="slow", timeout=1, log=log)
    assert time.monotonic() - t0 < 15
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_podman_environ_unwritable_cache_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")  # a file where the cache directory should be
    with pytest.raises(InputError, match=r"cannot write .*containers.conf.*XDG_CACHE_HOME"):
        podman_environ({"XDG_CACHE_HOME": str(tmp_path / "file")}, needed=True)


def test_run_piped_moves_data_and_names_the_side_that_failed(tmp_path):
    out = tmp_path / "out.txt"
    with open(tmp_path / "log", "w") as log:
        run_piped(
            ["printf", "a\\nb\\n"],
            ["bash", "-c", f"cat > {out}"],
            source_what="src",
            what="dst",
            timeout=30,
            log=log,
        )
        assert out.read_text() == "a\nb\n"
        with pytest.raises(StepError, match=r"^src failed \(exit 4\): source words \(full log"):
            run_piped(
                ["bash", "-c", "echo source words >&2; exit 4"],
                ["cat"],
                source_what="src",
                what="dst",
                timeout=30,
                log=log,
            )
        with pytest.raises(StepError, match=r"^dst failed \(exit 5\): sink words"):
            run_piped(
                ["yes"],
                ["bash", "-c", "head -c 1 >/dev/null; echo sink words; exit 5"],
                source_what="src",
                what="dst",
                timeout=30,
                log=log,
            )
        t0 = time.monotonic()
        with pytest.raises(StepTimeout, match="dst: no result within 1s"):
            run_piped(["sleep", "300"], ["cat"], source_what="src", what="dst", timeout=1, log=log)
        assert time.monotonic() - t0 < 15  # the source was stopped with the sink, not waited for
        with pytest.raises(StepError, match="src: no-such-tool-here is not installed"):
            run_piped(["no-such-tool-here"], ["cat"], source_what="src", what="dst", timeout=30, log=log)
    assert "source words" in (tmp_path / "log").read_text()  # the source's stderr is logged


def test_host_debian_mirror_from_both_source_formats(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://one.example/debian bookworm-security main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://two.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert base_mod.host_debian_mirror("bookworm", str(tmp_path)) == "http://two.example/debian"
    (tmp_path / "sources.list").write_text("deb [signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert base_mod.host_debian_mirror("bookworm", str(tmp_path)) == "http://one.example/debian"
    assert base_mod.host_debian_mirror("trixie", str(tmp_path)) == base_mod.DEFAULT_MIRROR
    assert base_mod.choose_mirror("bookworm", None, {"CORDEE_DEBIAN_MIRROR": "http://m/"}) == "http://m/"
    assert (
        base_mod.choose_mirror("bookworm", "http://flag/", {"CORDEE_DEBIAN_MIRROR": "http://m/"})
        == "http://flag/"
    )


def test_debootstrap_argv(tmp_path):
    argv = base_mod.debootstrap_argv(
        {"suite": "bookworm", "variant": "minbase", "include": ["python3", "ca-certificates"]},
        tmp_path,
        "http://m/d",
    )
    assert argv == [
        "debootstrap",
        "--variant=minbase",
        "--include=python3,ca-certificates",
        "bookworm",
        str(tmp_path),
        "http://m/d",
    ]


def test_remove_root_never_walks_into_a_mount(tmp_path):
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(root / "proc")], check=True, timeout=30)
    (root / "proc" / "file").write_text("x")
    base_mod.remove_root(root)
    assert not root.exists()


def test_edf_install_goes_to_the_first_edf_path_dir(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    environ = {"EDF_PATH": f":{first}:{second}", "HOME": str(tmp_path)}
    assert edf_dir(environ) == first and edf_dir({"HOME": str(tmp_path)}).name == ".edf"
    path = install_edf("x", 'image = "/abs/x.sqsh"\n', environ)
    assert path == first / "x.toml" and path.read_text() == 'image = "/abs/x.sqsh"\n'
    assert sorted(p.name for p in first.iterdir()) == ["x.toml"]  # no temporary left
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_edf_install_dir_is_the_first_one_an_edf_lookup_searches(tmp_path):
    from cordee.edf.load import find_edf

    environ = {"EDF_PATH": f"relative/edfs:{tmp_path / 'abs'}", "HOME": str(tmp_path)}
    assert edf_dir(environ) == tmp_path / "abs"  # relative entries are skipped by the lookup too
    path = install_edf("x", 'image = "/abs/x.sqsh"\n', environ)
    assert find_edf("x", environ) == path
    assert edf_dir({"HOME": str(tmp_path)}) == tmp_path / ".edf"
    with pytest.raises(InputError, match="EDF_PATH=rel: no absolute directory"):
        edf_dir({"EDF_PATH": "rel", "HOME": str(tmp_path)})


def test_platform_checks():
    from cordee.containers.podman import host_platform

    assert check_platform({"name": "x", "platform": None}) is None
    assert check_platform({"name": "x", "platform": host_platform()}) is None
    other = "linux/arm64" if host_platform() == "linux/amd64" else "linux/amd64"
    arch = {"linux/arm64": "aarch64", "linux/amd64": "x86_64"}[other]
    if os.path.exists(f"/proc/sys/fs/binfmt_misc/qemu-{arch}"):
        assert check_platform({"name": "x", "platform": other}) == other
    else:
        with pytest.raises(Exception, match="binfmt"):
            check_platform({"name": "x", "platform": other})


@pytest.mark.podman
def test_cache_hit_needs_key_tag_and_sqsh(tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    from test_squashfs_export import MINI_TAG, make_mini_image

    podman = make_mini_image(tmp_path)
    sqsh = tmp_path / "x.sqsh"
    plan = {"content_key": "k1", "tag": MINI_TAG, "sqsh": str(sqsh)}
    (tmp_path / ".built").write_text(json.dumps({"content_key": "k1", "tag": MINI_TAG}))
    assert not cache_hit(plan, tmp_path, podman)  # no .sqsh yet
    sqsh.write_text("x")
    assert cache_hit(plan, tmp_path, podman)
    assert not cache_hit({**plan, "content_key": "k2"}, tmp_path, podman)
    assert not cache_hit({**plan, "tag": "localhost/cordee-test/absent:0"}, tmp_path, podman)


def _cordee(*args: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([CORDEE, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


@pytest.mark.podman
def test_ci_builds_cpu_ci_and_runs_cordee_inside(tmp_path):
    """Issue 3: build cpu-ci for real (into build/cpu-ci/, so reruns hit the cache), export the
    .sqsh, install the EDF, run `cordee env show --json` in it, and check a rebuild is a cache hit."""
    missing = [t for t in ("podman", "debootstrap", "mksquashfs", "squashfuse") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed on this machine: {', '.join(missing)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "EDF_PATH"))}
    env["EDF_PATH"] = str(tmp_path / "edf")
    first = _cordee("image", "build", "cpu-ci", "--json", env=env, timeout=3000)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    assert summary["schema"] == "cordee.imagebuild/1" and summary["name"] == "cpu-ci"
    sqsh = Path(summary["sqsh"])
    assert sqsh.is_absolute() and sqsh.is_file() and sqsh.read_bytes()[:4] == b"hsqs"
    assert sqsh.stat().st_size == summary["sqsh_bytes"] and summary["image_bytes"] > summary["sqsh_bytes"]
    edf_file = tmp_path / "edf" / "cpu-ci.toml"
    assert Path(summary["edf"]) == edf_file and str(sqsh) in edf_file.read_text()
    assert Podman().image_exists(summary["tag"]) and summary["tag"].startswith("localhost/cordee/cpu-ci:")
    if not summary["cache_hit"]:
        print(f"cpu-ci cold build: {json.dumps(summary['build_timings'])}", file=sys.stderr)

    run = _cordee("edf", "run", "cpu-ci", "--", "cordee", "env", "show", "--json", env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(run.stdout)
    assert doc["schema"] == "cordee.env/1" and doc["scheduler"] == "local"
    assert (doc["rank"], doc["world_size"], doc["local_rank"], doc["nnodes"]) == (0, 1, 0, 1)
    assert doc["job_id"] is None and doc["master_addr"]

    mtime = sqsh.stat().st_mtime_ns
    again = _cordee("image", "build", "cpu-ci", "--json", env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["cache_hit"] is True and second["tag"] == summary["tag"] and second["sqsh"] == str(sqsh)
    assert "cache hit" in again.stderr and sqsh.stat().st_mtime_ns == mtime  # not rewritten


@pytest.mark.podman
def test_base_from_an_unreachable_mirror_fails_clearly_and_cleans_up(tmp_path):
    missing = [t for t in ("podman", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed on this machine: {', '.join(missing)}")
    base = {
        "kind": "debootstrap",
        "suite": "bookworm",
        "variant": "minbase",
        "include": [],
        "tag": "localhost/cordee-test/base-never:0",
    }
    podman = Podman()
    with (
        open(tmp_path / "build.log", "w") as log,
        pytest.raises(StepError, match="debootstrap bookworm from http://"),
    ):
        base_mod.ensure_base(
            base, podman, log=log, workdir=tmp_path / "work", mirror="http://mirror.invalid/debian"
        )
    assert "mirror.invalid" in (tmp_path / "build.log").read_text()
    assert list((tmp_path / "work").iterdir()) == [] and not podman.image_exists(base["tag"])


@pytest.mark.podman
def test_failed_base_tar_leaves_no_partial_base_image(tmp_path):
    """podman import commits what it read even when tar failed; that image would be taken as the
    base by the next build (ensure_base looks for the tag)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    podman, tag = Podman(), "localhost/cordee-test/base-partial:0"
    with (
        open(tmp_path / "build.log", "w") as log,
        pytest.raises(StepError, match="tar of the debootstrap root failed .*Cannot open"),
    ):
        base_mod._import_root(tmp_path / "missing-root", tag, podman, log)
    assert not podman.image_exists(tag)
