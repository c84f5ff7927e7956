"""`cordee edf run`: the podman command line built from an EDF (pure), then real runs with podman:
a tiny image as a squashfs (squashfuse or unsquashfs) and as a local tag, with env, mounts (bind
and sqsh), workdir, read-only, entrypoint and exit codes; and the cpu-ci image through its EDF."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_squashfs_export import MINI_TAG, make_mini_image, need_tools

from cordee.edf.load import Edf, Mount, load_edf
from cordee.edf.run import RunTimeout, local_tag, podman_argv, run_edf
from cordee.errors import InputError
from cordee.images.squashfs import export_squashfs

ROOT = Path(__file__).resolve().parent.parent


def edf(**kw) -> Edf:
    base = dict(
        path="/e/x.toml",
        image="/img/x.sqsh",
        workdir=None,
        entrypoint=False,
        writable=True,
        mounts=(),
        env={},
        annotations={},
        chain=("/e/x.toml",),
    )
    return Edf(**{**base, **kw})


def test_argv_rootfs_env_mounts_workdir():
    e = edf(env={"A": "edf", "GONE": ""}, mounts=(Mount("/d", "/data", ("ro", "rprivate", "x-create=dir")),))
    argv = podman_argv(
        e, ["cmd", "a b"], "/mnt/root", image_env={"A": "img", "GONE": "x", "P": "1"}, image_workdir="/w"
    )
    assert argv[:2] == ["podman", "run"] and "--rm" in argv and "--network=host" in argv
    assert argv[-4:] == ["--rootfs", "/mnt/root:O", "cmd", "a b"]  # podman: options before --rootfs PATH
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert envs == ["A=edf", "P=1"]  # EDF over image; "" unsets
    assert ["-v", "/d:/data:ro,rprivate"] == argv[argv.index("-v") : argv.index("-v") + 2]
    assert argv[argv.index("-w") + 1] == "/w" and "--read-only" not in argv
    e2 = e._replace(workdir="/edf/wd", writable=False, entrypoint=True)
    argv2 = podman_argv(e2, ["cmd"], "/mnt/root", image_workdir="/w")
    assert argv2[argv2.index("-w") + 1] == "/edf/wd" and "--read-only" in argv2
    assert argv2[-4:] == ["/mnt/root:O", "/bin/sh", "/etc/rc", "cmd"]  # Enroot's entrypoint is /etc/rc


def test_argv_environment_is_host_then_image_then_edf():
    e = edf(env={"A": "edf", "GONE": ""})
    host = {"A": "host", "B": "host", "C": "host", "GONE": "host", "PWD": "/here", "SHLVL": "2"}
    argv = podman_argv(e, ["cmd"], "/mnt/root", image_env={"B": "img"}, host_env=host)
    envs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-e")
    # as under CE: the image overrides the host, the EDF overrides both; shell state stays behind
    assert envs == {"A": "edf", "B": "img", "C": "host"}


def test_argv_tag():
    argv = podman_argv(edf(image="x", env={"U": "", "K": "v"}), ["true"], "localhost/x:1")
    assert argv[-2:] == ["localhost/x:1", "true"]
    assert "--unsetenv=U" in argv and "--entrypoint=[]" in argv and "-e" in argv and "K=v" in argv
    assert "--entrypoint=[]" not in podman_argv(edf(image="x", entrypoint=True), ["true"], "localhost/x:1")


def test_argv_rejects_what_it_cannot_do():
    with pytest.raises(InputError, match="must be mounted"):
        podman_argv(edf(mounts=(Mount("/a.sqsh", "/data", ("sqsh",)),)), ["true"], "/r")
    with pytest.raises(InputError, match="mount flag"):
        podman_argv(edf(mounts=(Mount("/a", "/data", ("bogus",)),)), ["true"], "/r")


@pytest.mark.parametrize(
    "ref, tag",
    [
        ("cpu-ci", "localhost/cpu-ci:latest"),
        ("cordee/cpu-ci:0a1b", "localhost/cordee/cpu-ci:0a1b"),
        ("nvcr.io#nvidia/pytorch:25.06-py3", "nvcr.io/nvidia/pytorch:25.06-py3"),
        ("me@nvcr.io#nvidia/pytorch:25.06-py3", "nvcr.io/nvidia/pytorch:25.06-py3"),
        ("localhost/cordee/cpu-ci:1", "localhost/cordee/cpu-ci:1"),
        ("reg:5000#team/img", "reg:5000/team/img:latest"),
    ],
)
def test_local_tag(ref, tag):
    assert local_tag(ref) == tag


def write_edf(path: Path, image: str, extra: str = "", entrypoint: bool = False) -> Path:
    path.write_text(f'image = "{image}"\nentrypoint = {str(entrypoint).lower()}\n{extra}')
    return path


@pytest.fixture(scope="module")
def mini_sqsh(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mini")
    podman = make_mini_image(tmp)
    out = tmp / "mini.sqsh"
    with open(tmp / "export.log", "w") as log:
        export_squashfs(podman, MINI_TAG, out, log=log, enroot=False)
    return out


def leftovers() -> tuple[list[str], str]:
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if "cordee-sqsh-" in line]
    ps = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60
    )
    return mounts, " ".join(n for n in ps.stdout.split() if n.startswith("cordee-edf-"))


@pytest.mark.podman
def test_run_squashfs_image(mini_sqsh, tmp_path, capfd):
    need_tools("podman", "squashfuse")
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host\n")
    extra_sqsh = tmp_path / "extra.sqsh"
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "x.txt").write_text("inside a squashfs\n")
    subprocess.run(
        ["mksquashfs", str(tmp_path / "extra"), str(extra_sqsh), "-noappend", "-quiet", "-no-progress"],
        check=True,
        timeout=60,
    )
    path = write_edf(
        tmp_path / "mini.toml",
        str(mini_sqsh),
        f'mounts = ["{data}:/data:ro", "{extra_sqsh}:/extra:sqsh"]\n'
        'workdir = "/tmp"\n[env]\nEDF_VAR = "${HOME}"\nCORDEE_TEST = ""\n',
    )
    e = load_edf(str(path), {"HOME": "/home/someone", "EDF_PATH": str(tmp_path)})
    script = (
        'echo "$GREETING|$EDF_VAR|${CORDEE_TEST-unset}|$(pwd)"; '
        "cat /data/in.txt /extra/x.txt; touch /data/no || echo ro-ok"
    )
    assert run_edf(e, ["/bin/sh", "-c", script], timeout=120) == 0
    out = capfd.readouterr().out.splitlines()
    assert out == [
        "hello from the image|/home/someone|unset|/tmp",
        "from the host",
        "inside a squashfs",
        "ro-ok",
    ]
    assert run_edf(e, ["/bin/sh", "-c", "exit 7"], timeout=120) == 7
    assert leftovers() == ([], "")


@pytest.mark.podman
def test_run_read_only_and_entrypoint(mini_sqsh, tmp_path, capfd):
    need_tools("podman")
    ro = load_edf(str(write_edf(tmp_path / "ro.toml", str(mini_sqsh), "writable = false\n")), {})
    assert run_edf(ro, ["/bin/sh", "-c", "touch /new"], timeout=120) != 0
    rw = load_edf(str(write_edf(tmp_path / "rw.toml", str(mini_sqsh), entrypoint=True)), {})
    assert run_edf(rw, ["arg1", "arg2"], timeout=120) == 0
    assert capfd.readouterr().out.strip().endswith("entry:arg1 arg2")  # the image's ENTRYPOINT ran
    assert run_edf(rw._replace(entrypoint=False), ["/bin/sh", "-c", "pwd"], timeout=120) == 0
    assert capfd.readouterr().out.strip() == "/work/dir"  # the image's WORKDIR, from its /etc/rc


@pytest.mark.podman
def test_run_local_tag_and_missing_image(mini_sqsh, tmp_path, capfd):
    need_tools("podman")
    e = load_edf(
        str(write_edf(tmp_path / "t.toml", MINI_TAG.removeprefix("localhost/"), '[env]\nX = "1"\n')), {}
    )
    assert run_edf(e, ["/bin/sh", "-c", 'echo "$GREETING $X $(pwd)"'], timeout=120) == 0
    assert capfd.readouterr().out.strip() == "hello from the image 1 /work/dir"
    assert run_edf(e._replace(entrypoint=True), ["x"], timeout=120) == 0
    assert capfd.readouterr().out.strip() == "entry:x"  # the image's ENTRYPOINT, given CMD x
    missing = load_edf(str(write_edf(tmp_path / "m.toml", "cordee-test/nothing:0")), {})
    with pytest.raises(InputError, match="not available locally"):
        run_edf(missing, ["true"])
    gone = edf(image=str(tmp_path / "gone.sqsh"))
    with pytest.raises(InputError, match="no such file"):
        run_edf(gone, ["true"])


@pytest.mark.podman
def test_host_environment_reaches_the_container_unless_asked_not_to(mini_sqsh, tmp_path, capfd):
    need_tools("podman")
    e = load_edf(str(write_edf(tmp_path / "h.toml", str(mini_sqsh))), {})
    host = {**os.environ, "HOST_PROBE": "from-the-job", "GREETING": "host loses to the image"}
    probe = 'echo "${HOST_PROBE-absent}|$GREETING"'
    assert run_edf(e, ["/bin/sh", "-c", probe], environ=host, timeout=120) == 0
    assert capfd.readouterr().out.strip() == "from-the-job|hello from the image"
    assert run_edf(e, ["/bin/sh", "-c", probe], environ=host, timeout=120, host_env=False) == 0
    assert capfd.readouterr().out.strip() == "absent|hello from the image"


@pytest.mark.podman
def test_timeout_stops_and_removes_the_container(mini_sqsh, tmp_path):
    need_tools("podman")
    e = load_edf(str(write_edf(tmp_path / "t.toml", str(mini_sqsh))), {})
    with pytest.raises(RunTimeout, match="did not finish within 3s"):
        run_edf(e, ["/bin/sh", "-c", "while :; do :; done"], timeout=3)  # no sleep in the mini image
    assert leftovers() == ([], "")


@pytest.fixture(scope="module")
def cpu_ci(tmp_path_factory):
    """cpu-ci built for real (cached in build/cpu-ci/ after the first time) with its EDF installed
    into a temporary EDF_PATH."""
    need_tools("podman", "debootstrap", "mksquashfs")
    from cordee.images.build import build_image

    edfs = tmp_path_factory.mktemp("edf")
    environ = {**os.environ, "EDF_PATH": str(edfs)}
    summary = build_image("cpu-ci", root=ROOT, environ=environ)
    return summary, environ


@pytest.mark.podman
def test_cpu_ci_runs_python_with_torch_and_cordee(cpu_ci, tmp_path, capfd):
    summary, environ = cpu_ci
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.py").write_text(
        "import json, os, sys, torch, cordee\n"
        "print(json.dumps({'torch': torch.__version__, 'cordee': cordee.__version__, "
        "'sum': float(torch.arange(5.0).sum()), 'python': sys.version_info[:2], "
        "'var': os.environ['PROBE']}))\n"
    )
    e = load_edf("cpu-ci", environ)
    assert e.image == summary["sqsh"]
    e = e._replace(
        mounts=(*e.mounts, Mount(str(work), "/probe", ("ro",))), env={**e.env, "PROBE": "set by the EDF"}
    )
    assert run_edf(e, ["python3", "/probe/probe.py"], environ=environ, timeout=300) == 0
    doc = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    import cordee

    assert doc["torch"].startswith("2.13.0") and doc["cordee"] == cordee.__version__
    assert doc["sum"] == 10.0 and doc["python"] == [3, 11] and doc["var"] == "set by the EDF"


@pytest.mark.podman
def test_run_without_fuse_unpacks_once_into_the_cache(mini_sqsh, tmp_path, capfd):
    """Where squashfuse cannot be used (not installed, no /dev/fuse), the image is unpacked with
    unsquashfs into a cache keyed by path, size and mtime, and reused."""
    need_tools("podman", "unsquashfs")
    bin_dir = tmp_path / "bin"  # a PATH with podman and unsquashfs but no squashfuse
    bin_dir.mkdir()
    for tool in ("podman", "unsquashfs"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    environ = {"PATH": str(bin_dir), "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    e = load_edf(str(write_edf(tmp_path / "u.toml", str(mini_sqsh))), {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", environ["PATH"])
        assert run_edf(e, ["/bin/sh", "-c", 'echo "$GREETING"'], environ=environ, timeout=120) == 0
        (unpacked,) = (tmp_path / "cache" / "cordee" / "rootfs").iterdir()
        stamp = unpacked.stat().st_mtime_ns
        assert run_edf(e, ["/bin/cat", "/etc/environment"], environ=environ, timeout=120) == 0
    out = capfd.readouterr().out
    assert out.startswith("hello from the image\n") and "GREETING=hello from the image" in out
    assert unpacked.stat().st_mtime_ns == stamp and (unpacked / "bin" / "dash").is_file()
    assert leftovers() == ([], "")


def test_argv_terminal():
    assert podman_argv(edf(), ["python"], "/r", terminal=True)[5:7] == ["-i", "-t"]
    assert "-t" not in podman_argv(edf(), ["python"], "/r") and "-i" in podman_argv(edf(), ["python"], "/r")


@pytest.mark.podman
def test_stdin_reaches_the_command(mini_sqsh, tmp_path):
    need_tools("podman")
    path = write_edf(tmp_path / "in.toml", str(mini_sqsh))
    cordee = str(Path(sys.executable).with_name("cordee"))
    argv = [cordee, "edf", "run", str(path), "--", "/bin/cat"]
    cp = subprocess.run(argv, input="piped line\n", capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0 and cp.stdout == "piped line\n", cp.stderr
