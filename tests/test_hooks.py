"""Enroot hooks (hooks/): each hook runs under real bash with temporary ENROOT_ENVIRON /
ENROOT_MOUNTS / ENROOT_ROOTFS files, the way Enroot runs it, against fake host trees
(CORDEE_HOOK_HOSTROOT) holding gcc-built libraries that the real `ldd` resolves. The mount lines
are then applied with the real mount(8) in a private mount namespace and the plugin is loaded
by the real dynamic loader, as NCCL would. shellcheck checks every script; install.sh installs
into a temporary Enroot config directory and uninstalls again."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from cordee.errors import InputError
from cordee.profiles import Profile, ProfileVar, load, names
from cordee.profiles.envfile import render_envfile

REPO = Path(__file__).resolve().parents[1]
HOOKS = REPO / "hooks"
FABRIC = HOOKS / "50-cordee-fabric-profile.sh"
NETPLUGIN = HOOKS / "99-cordee-netplugin.sh"
HOSTLIB = "/opt/cordee/hostlib"
LIB = "x-create=file,bind,ro,nosuid,nodev,private"
DIR = "x-create=dir,bind,ro,nosuid,nodev,private"
DEV = "x-create=file,bind,rw,nosuid,noexec,private"
_runs = itertools.count()


class HookRun(NamedTuple):
    rc: int
    stderr: str
    env: list[str]  # lines the hook appended to ENROOT_ENVIRON
    mounts: list[str]  # lines of ENROOT_MOUNTS


def run_hook(
    hook: Path, tmp: Path, *, environ=(), mounts=(), env=None, hostroot=None, rootfs=None, profiles=None
):
    """Run `hook` as Enroot does: bash, a clean environment plus ENROOT_*; `environ` is what
    ENROOT_ENVIRON holds before (the image's /etc/environment, `enroot start -e`, ...)."""
    d = tmp / f"run{next(_runs)}"
    (d / "rootfs").mkdir(parents=True)
    (d / "emptyhost").mkdir()
    before = "".join(f"{line}\n" for line in environ)
    (d / "environ").write_text(before)
    (d / "fstab").write_text("".join(f"{line}\n" for line in mounts))
    full = {
        "PATH": os.environ["PATH"],
        "HOME": str(d),
        "ENROOT_ENVIRON": str(d / "environ"),
        "ENROOT_MOUNTS": str(d / "fstab"),
        "ENROOT_ROOTFS": str(rootfs or d / "rootfs"),
        "ENROOT_PID": str(os.getpid()),
        "CORDEE_HOOK_HOSTROOT": str(hostroot or d / "emptyhost"),  # never this machine's /dev
    }
    if profiles is not None:
        full["CORDEE_HOOK_PROFILE_DIR"] = str(profiles)
    full.update(env or {})
    proc = subprocess.run(["bash", str(hook)], env=full, capture_output=True, text=True, timeout=120)
    after = (d / "environ").read_text()
    assert after.startswith(before), "a hook must only append to ENROOT_ENVIRON"
    return HookRun(
        proc.returncode,
        proc.stderr,
        after[len(before) :].splitlines(),
        (d / "fstab").read_text().splitlines(),
    )


def container_env(environ_lines) -> dict[str, str]:
    """What Enroot's switchroot makes of ENROOT_ENVIRON: KEY=VALUE lines, the last one wins."""
    out = {}
    for line in environ_lines:
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


@pytest.fixture(scope="module")
def profiles(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profiles")
    proc = subprocess.run(
        [sys.executable, "-m", "cordee.profiles.envfile", "--all", "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def cxi_host(tmp_path) -> Path:
    root = tmp_path / "cxihost"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "cxi0").touch()
    return root


def expected_profile_lines(name: str) -> list[str]:
    return [f"{k}={v}" for k, v in load(name).as_env().items()] + [f"CORDEE_PROFILE={name}"]


# --- shellcheck -------------------------------------------------------------------------------


def test_shellcheck_passes_on_every_hook_script():
    assert shutil.which("shellcheck"), "shellcheck is installed by scripts/install-system-deps.sh"
    scripts = sorted(str(p.relative_to(REPO)) for p in HOOKS.glob("*.sh"))
    assert {"hooks/common.sh", "hooks/install.sh", f"hooks/{FABRIC.name}", f"hooks/{NETPLUGIN.name}"} <= set(
        scripts
    )
    proc = subprocess.run(
        ["shellcheck", "-x", "-s", "bash", *scripts], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hooks_are_executable_bash_with_strict_mode():
    for hook in (FABRIC, NETPLUGIN, HOOKS / "install.sh"):
        text = hook.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert os.access(hook, os.X_OK), f"{hook.name}: Enroot only runs executable hooks"


# --- profile env files (one source of truth) -------------------------------------------------


@pytest.mark.parametrize("name", names())
def test_envfile_holds_exactly_the_profile_variables(name, profiles):
    text = (profiles / f"{name}.env").read_text()
    assert text == render_envfile(load(name))
    assert container_env(text.splitlines()) == load(name).as_env()


def test_envfile_refuses_values_enroot_would_change():
    def profile(value):
        return Profile("p", "d", "local", (ProfileVar("X", value, "s", "n"),), ())

    assert render_envfile(profile("^LL128 with spaces")).endswith("X=^LL128 with spaces\n")
    for bad in ("two\nlines", '"quoted"', "'a' "):
        with pytest.raises(InputError, match="profile 'p', variable X"):
            render_envfile(profile(bad))


def test_envfile_command_errors_are_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "cordee.profiles.envfile", "no-such-profile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "unknown profile 'no-such-profile'" in proc.stderr


# --- 50-cordee-fabric-profile.sh ----------------------------------------------------------------


@pytest.mark.parametrize("name", names())
def test_fabric_hook_applies_the_named_profile(name, tmp_path, profiles):
    r = run_hook(FABRIC, tmp_path, env={"CORDEE_FABRIC_PROFILE": name}, profiles=profiles)
    assert r.rc == 0, r.stderr
    assert r.env == expected_profile_lines(name)
    assert r.mounts == [] and r.stderr == ""


def test_fabric_hook_never_overwrites_what_the_user_or_image_set(tmp_path, cxi_host, profiles):
    image = ["PATH=/usr/local/bin:/usr/bin", "NCCL_PROTO=Simple", "NCCL_CROSS_NIC="]  # empty is a choice too
    r = run_hook(
        FABRIC,
        tmp_path,
        environ=image,
        env={"FI_CXI_RX_MATCH_MODE": "hybrid"},
        hostroot=cxi_host,
        profiles=profiles,
    )
    assert r.rc == 0, r.stderr
    kept = {"NCCL_PROTO", "NCCL_CROSS_NIC", "FI_CXI_RX_MATCH_MODE"}
    assert r.env == [
        line for line in expected_profile_lines("slingshot-cscs") if line.split("=")[0] not in kept
    ]
    final = container_env(image + r.env)
    assert final["NCCL_PROTO"] == "Simple" and final["NCCL_CROSS_NIC"] == ""
    assert final["NCCL_NET"] == "AWS Libfabric"


def test_fabric_hook_auto_does_nothing_without_slingshot(tmp_path, profiles):
    r = run_hook(FABRIC, tmp_path, environ=["A=1"], profiles=profiles)
    assert (r.rc, r.env, r.mounts, r.stderr) == (0, [], [], "")


@pytest.mark.parametrize("where", ["/dev/cxi0", "/sys/class/cxi/cxi0"])
def test_fabric_hook_auto_picks_slingshot_cscs_on_cxi_hosts(where, tmp_path, profiles):
    root = tmp_path / "host"
    (root / where.lstrip("/")).mkdir(parents=True)
    r = run_hook(FABRIC, tmp_path, hostroot=root, profiles=profiles)
    assert r.rc == 0 and r.env == expected_profile_lines("slingshot-cscs")


def test_fabric_hook_auto_follows_cordee_profile(tmp_path, cxi_host, profiles):
    r = run_hook(
        FABRIC, tmp_path, environ=["CORDEE_PROFILE=slingshot-hpe"], hostroot=cxi_host, profiles=profiles
    )
    assert r.rc == 0 and r.env == expected_profile_lines("slingshot-hpe")[:-1]  # CORDEE_PROFILE kept
    r = run_hook(FABRIC, tmp_path, env={"CORDEE_PROFILE": "none"}, hostroot=cxi_host, profiles=profiles)
    assert (r.rc, r.env) == (0, [])


@pytest.mark.parametrize("how", ["hook-env", "container-env"])
@pytest.mark.parametrize("value", ["none", "off", "NONE"])
def test_fabric_hook_none_disables_it(how, value, tmp_path, cxi_host, profiles):
    setting = {"CORDEE_FABRIC_PROFILE": value}
    environ = [f"CORDEE_FABRIC_PROFILE={value}"] if how == "container-env" else []
    r = run_hook(
        FABRIC,
        tmp_path,
        environ=environ,
        env=None if environ else setting,
        hostroot=cxi_host,
        profiles=profiles,
    )
    assert (r.rc, r.env, r.mounts) == (0, [], [])


def test_container_env_setting_wins_over_the_hook_environment(tmp_path, profiles):
    r = run_hook(
        FABRIC, tmp_path, environ=["CORDEE_FABRIC_PROFILE=ethernet-tcp"],
        env={"CORDEE_FABRIC_PROFILE": "none"}, profiles=profiles,
    )  # fmt: skip
    assert r.rc == 0 and r.env == expected_profile_lines("ethernet-tcp")


@pytest.mark.parametrize("bad", ["no-such-profile", "../slingshot-cscs", "Slingshot-CSCS"])
def test_fabric_hook_unknown_profile_stops_the_container_start(bad, tmp_path, profiles):
    r = run_hook(FABRIC, tmp_path, env={"CORDEE_FABRIC_PROFILE": bad}, profiles=profiles)
    assert r.rc == 2 and r.env == []
    assert r.stderr.count("\n") == 1, r.stderr
    assert f"CORDEE_FABRIC_PROFILE={bad}: unknown profile" in r.stderr
    assert "slingshot-cscs" in r.stderr and "CORDEE_FABRIC_PROFILE=none" in r.stderr


def test_fabric_hook_without_generated_profiles_says_how_to_fix(tmp_path, cxi_host):
    r = run_hook(FABRIC, tmp_path, hostroot=cxi_host)  # source tree: no hooks/profiles/
    assert r.rc == 2 and "run hooks/install.sh" in r.stderr


def test_hooks_refuse_to_run_outside_enroot():
    for hook in (FABRIC, NETPLUGIN):
        proc = subprocess.run(
            ["bash", str(hook)], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2 and "ENROOT_ENVIRON is not set" in proc.stderr


def test_verbose_logs_each_variable_with_the_hook_name(tmp_path, cxi_host, profiles):
    r = run_hook(
        FABRIC, tmp_path, environ=["NCCL_PROTO=Simple"], env={"CORDEE_HOOK_VERBOSE": "1"},
        hostroot=cxi_host, profiles=profiles,
    )  # fmt: skip
    assert "[cordee 50-cordee-fabric-profile] set NCCL_NET=AWS Libfabric\n" in r.stderr
    assert "[cordee 50-cordee-fabric-profile] kept NCCL_PROTO (already set for the container)\n" in r.stderr


# --- 99-cordee-netplugin.sh: fake host tree of gcc-built libraries ------------------------------


def gcc(out: Path, source: str, *args: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f".{out.name}.c"
    src.write_text(textwrap.dedent(source))
    cmd = ["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(src), *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return out


class Host(NamedTuple):
    root: Path
    plugin: Path
    libfabric: Path  # libfabric.so.1 (a symlink, as installed)
    provider_dir: Path
    libcxi: Path  # libcxi.so.1 (a symlink)


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Host:
    """An HPE-like host: /opt/cray/libfabric/1.22.0/lib64 with a provider dir, libcxi in /usr/lib64,
    aws-ofi-nccl's libnccl-net-ofi.so linked against that libfabric (RUNPATH), /dev/cxi0-1."""
    assert shutil.which("gcc") and shutil.which("ldd")
    root = tmp_path_factory.mktemp("host")
    lib64, fab = root / "usr/lib64", root / "opt/cray/libfabric/1.22.0/lib64"
    cxi = gcc(lib64 / "libcxi.so.1.5.0", "int cxil_version(void) { return 5; }", "-Wl,-soname,libcxi.so.1")
    (lib64 / "libcxi.so.1").symlink_to(cxi.name)
    real = gcc(
        fab / "libfabric.so.1.22.0",
        "int cxil_version(void);\nunsigned fi_version(void) { return (1u << 16) | (17u + cxil_version()); }",
        "-Wl,-soname,libfabric.so.1", str(lib64 / "libcxi.so.1"), f"-Wl,-rpath,{lib64}",
    )  # fmt: skip
    (fab / "libfabric.so.1").symlink_to(real.name)
    gcc(fab / "libfabric/libcxi-fi.so", "int fi_prov_ini(void) { return 0; }")
    plugin = gcc(
        lib64 / "libnccl-net-ofi.so",
        'unsigned fi_version(void);\nconst char *ncclNetPlugin_v8 = "AWS Libfabric";\n'
        "unsigned plugin_fi_version(void) { return fi_version(); }",
        str(fab / "libfabric.so.1"), f"-Wl,-rpath,{fab}",
    )  # fmt: skip
    for n in (0, 1):
        (root / "dev" / f"cxi{n}").parent.mkdir(exist_ok=True)
        (root / "dev" / f"cxi{n}").touch()
    return Host(root, plugin, fab / "libfabric.so.1", fab / "libfabric", lib64 / "libcxi.so.1")


def expected_mounts(host: Host) -> list[str]:
    return [
        f"{host.plugin} {HOSTLIB}/libnccl-net-ofi.so none {LIB}",
        f"{host.plugin} {HOSTLIB}/libnccl-net.so none {LIB}",
        f"{host.libfabric.resolve()} {HOSTLIB}/libfabric.so.1 none {LIB}",
        f"{host.provider_dir} {HOSTLIB}/libfabric none {DIR}",
        f"{host.libcxi.resolve()} {HOSTLIB}/libcxi.so.1 none {LIB}",
        f"{host.root}/dev/cxi0 /dev/cxi0 none {DEV}",
        f"{host.root}/dev/cxi1 /dev/cxi1 none {DEV}",
    ]


def test_netplugin_mounts_plugin_libfabric_missing_libraries_and_devices(tmp_path, host):
    r = run_hook(NETPLUGIN, tmp_path, hostroot=host.root)
    assert r.rc == 0, r.stderr
    assert r.mounts == expected_mounts(host)
    assert r.env == [f"LD_LIBRARY_PATH={HOSTLIB}", f"FI_PROVIDER_PATH={HOSTLIB}/libfabric"]
    assert r.stderr == ""


def test_netplugin_keeps_container_paths_and_user_settings(tmp_path, host):
    image = ["LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/lib", "FI_PROVIDER_PATH=/opt/own/providers"]
    r = run_hook(NETPLUGIN, tmp_path, environ=image, hostroot=host.root)
    assert r.rc == 0 and r.env == [f"LD_LIBRARY_PATH={HOSTLIB}:/usr/local/cuda/lib64:/usr/local/lib"]
    r = run_hook(NETPLUGIN, tmp_path, env={"LD_LIBRARY_PATH": f"/x:{HOSTLIB}"}, hostroot=host.root)
    assert r.rc == 0 and r.env == [f"FI_PROVIDER_PATH={HOSTLIB}/libfabric"]  # already in front of the loader


def test_netplugin_appends_to_earlier_hooks_mounts_without_repeating_lines(tmp_path, host):
    earlier = ["", "tmpfs /scratch tmpfs x-create=dir,rw", expected_mounts(host)[0]]
    r = run_hook(NETPLUGIN, tmp_path, mounts=earlier, hostroot=host.root)
    assert r.rc == 0, r.stderr
    assert r.mounts == earlier + expected_mounts(host)[1:]


def test_netplugin_uses_the_containers_own_copy_of_a_library(tmp_path, host):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (rootfs / "usr/lib/x86_64-linux-gnu/libcxi.so.1").touch()
    r = run_hook(NETPLUGIN, tmp_path, hostroot=host.root, rootfs=rootfs)
    assert r.rc == 0 and r.mounts == [m for m in expected_mounts(host) if "libcxi" not in m]


def test_netplugin_explicit_dirs_and_paths_with_blanks(tmp_path, host):
    plugin_dir = tmp_path / "my plugins"
    plugin_dir.mkdir()
    shutil.copy(host.plugin, plugin_dir / "libnccl-net.so")
    env = {"CORDEE_NCCL_PLUGIN_DIR": str(plugin_dir), "CORDEE_LIBFABRIC_DIR": str(host.libfabric.parent)}
    r = run_hook(NETPLUGIN, tmp_path, env=env)  # empty host root: only what was named
    assert r.rc == 0, r.stderr
    escaped = str(plugin_dir).replace(" ", "\\040")
    assert r.mounts == [
        f"{escaped}/libnccl-net.so {HOSTLIB}/libnccl-net.so none {LIB}",
        *[m for m in expected_mounts(host) if "libnccl-net" not in m and "/dev/" not in m],
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CORDEE_NETPLUGIN": "on"}, "CORDEE_NETPLUGIN=on but no NCCL net plugin"),
        ({"CORDEE_NETPLUGIN": "sometimes"}, "CORDEE_NETPLUGIN=sometimes: allowed values are auto, on, off"),
        ({"CORDEE_NCCL_PLUGIN_DIR": "/nonexistent"}, "CORDEE_NCCL_PLUGIN_DIR=/nonexistent: none of"),
    ],
)
def test_netplugin_bad_settings_stop_the_container_start(env, message, tmp_path):
    r = run_hook(NETPLUGIN, tmp_path, env=env)
    assert r.rc == 2 and message in r.stderr and r.env == [] and r.mounts == []


def test_netplugin_guards(tmp_path, host):
    assert run_hook(NETPLUGIN, tmp_path) == HookRun(0, "", [], [])  # nothing on this host
    r = run_hook(NETPLUGIN, tmp_path, env={"CORDEE_NETPLUGIN": "off"}, hostroot=host.root)
    assert r == HookRun(0, "", [], [])
    devices_only = tmp_path / "devonly"
    shutil.copytree(host.root / "dev", devices_only / "dev")
    r = run_hook(NETPLUGIN, tmp_path, hostroot=devices_only)  # the image brings its own network stack
    assert r.rc == 0 and r.env == [] and r.mounts == expected_mounts(host._replace(root=devices_only))[-2:]


def _unshare_works() -> bool:
    cmd = ["unshare", "--mount", "--propagation", "private", "true"]
    return (
        shutil.which("unshare") is not None
        and subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    )


# Run in a private mount namespace: mount the fstab lines the way enroot-mount does (x-create,
# bind, ro remount), then start LOAD_AS_NCCL with the container's library path.
APPLY_MOUNTS = r"""
import os, subprocess, sys
rootfs, fstab, libpath, program = sys.argv[1:5]
for line in open(fstab):
    src, dst, _, opts = (f.replace("\\040", " ") for f in line.split())
    opts, target = opts.split(","), rootfs + dst
    if "x-create=dir" in opts:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    subprocess.run(["mount", "--bind", src, target], check=True)
    if "ro" in opts:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
os.environ["LD_LIBRARY_PATH"] = libpath
os.execv(sys.executable, [sys.executable, "-c", program])
"""
# NCCL's default: dlopen("libnccl-net.so") through the loader's search path.
LOAD_AS_NCCL = r"""
import ctypes, os
plugin = ctypes.CDLL("libnccl-net.so")
print(ctypes.c_char_p.in_dll(plugin, "ncclNetPlugin_v8").value.decode())
plugin.plugin_fi_version.restype = ctypes.c_uint
print(plugin.plugin_fi_version())
print(*sorted({l.split()[-1] for l in open("/proc/self/maps") if ".so" in l}), sep="\n")
try:
    open(os.environ["LD_LIBRARY_PATH"].split(":")[0] + "/libnccl-net.so", "r+b")
except OSError as e:
    print("errno", e.errno)
"""


@pytest.mark.skipif(
    not _unshare_works(), reason="cannot create a mount namespace here (needs root / CAP_SYS_ADMIN)"
)
def test_mount_lines_work_and_the_loader_takes_the_host_stack(tmp_path, host):
    r = run_hook(NETPLUGIN, tmp_path, environ=["LD_LIBRARY_PATH=/usr/local/lib"], hostroot=host.root)
    assert r.rc == 0, r.stderr
    rootfs = tmp_path / "container"
    rootfs.mkdir()
    (tmp_path / "fstab").write_text("".join(m + "\n" for m in r.mounts))
    ld_path = container_env(r.env)["LD_LIBRARY_PATH"]
    on_host = ":".join(str(rootfs) + p for p in ld_path.split(":"))  # container paths, seen from here
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", APPLY_MOUNTS,
         str(rootfs), str(tmp_path / "fstab"), on_host, LOAD_AS_NCCL],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    name, version, *rest = proc.stdout.splitlines()
    maps, errno_line = rest[:-1], rest[-1]
    assert name == "AWS Libfabric" and int(version) == (1 << 16) | 22  # fake libfabric 1.(17 + libcxi 5)
    mounted = f"{rootfs}{HOSTLIB}"
    for soname in ("libnccl-net.so", "libfabric.so.1", "libcxi.so.1"):  # not the host paths (RUNPATH)
        assert f"{mounted}/{soname}" in maps, maps
    assert errno_line == "errno 30"  # EROFS: the host's libraries are mounted read-only
    assert not any(p.startswith(str(host.root)) for p in maps)


def test_netplugin_with_debian_libfabric_skips_glibc_and_mounts_its_closure(tmp_path):
    real = Path("/usr/lib/x86_64-linux-gnu/libfabric.so.1")
    if not real.exists():
        pytest.skip("libfabric1 (Debian) is not installed")
    plugin = gcc(
        tmp_path / "p/libnccl-net-ofi.so",
        "unsigned fi_version(void);\nunsigned f(void) { return fi_version(); }",
        str(real),
    )
    rootfs = tmp_path / "img"
    (rootfs / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (rootfs / "usr/lib/x86_64-linux-gnu/libnl-3.so.200").touch()  # the image has this one
    r = run_hook(NETPLUGIN, tmp_path, env={"CORDEE_NCCL_PLUGIN_DIR": str(plugin.parent)}, rootfs=rootfs)
    assert r.rc == 0, r.stderr
    targets = {m.split()[1].rsplit("/", 1)[-1]: m.split()[0] for m in r.mounts}
    assert targets["libfabric.so.1"] == str(real.resolve())
    assert {"libibverbs.so.1", "librdmacm.so.1", "libnl-route-3.so.200"} <= set(targets)
    assert not {"libc.so.6", "libm.so.6", "libnl-3.so.200"} & set(targets)
    assert not any(t.startswith("ld-linux") for t in targets)
    assert all(Path(src).is_file() for src in targets.values())


# --- install.sh -----------------------------------------------------------------------------


def install(*args: str, env=None) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **(env or {})}
    return subprocess.run(
        ["bash", str(HOOKS / "install.sh"), *args], env=full, capture_output=True, text=True, timeout=120
    )


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): oct(p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_install_uninstall_round_trip(tmp_path, cxi_host):
    prefix = tmp_path / "enroot"
    (prefix / "hooks.d").mkdir(parents=True)
    (prefix / "hooks.d/10-site.sh").write_text("#!/bin/bash\n")  # someone else's hook stays
    proc = install("--prefix", str(prefix))
    assert proc.returncode == 0, proc.stderr
    hooks_d = prefix / "hooks.d"
    expected = {
        "10-site.sh": oct(0o644),
        FABRIC.name: oct(0o755),
        NETPLUGIN.name: oct(0o755),
        "cordee/common.sh": oct(0o644),
        "cordee/installed": oct(0o644),
        **{f"cordee/profiles/{n}.env": oct(0o644) for n in names()},
    }
    assert tree(hooks_d) == expected
    for name in (FABRIC.name, NETPLUGIN.name):
        assert (hooks_d / name).read_bytes() == (HOOKS / name).read_bytes()
    for n in names():
        assert (hooks_d / f"cordee/profiles/{n}.env").read_text() == render_envfile(load(n))

    # The installed hook finds its library and profiles on its own.
    r = run_hook(hooks_d / FABRIC.name, tmp_path, hostroot=cxi_host)
    assert r.rc == 0 and r.env == expected_profile_lines("slingshot-cscs"), r.stderr

    # Idempotent; leftovers of an older install (a dropped hook, a dropped profile) go away.
    (hooks_d / "98-cordee-old.sh").write_text("#!/bin/bash\n")
    with open(hooks_d / "cordee/installed", "a") as f:
        f.write("98-cordee-old.sh\n")
    (hooks_d / "cordee/profiles/retired.env").write_text("A=1\n")
    assert install("--prefix", str(prefix)).returncode == 0
    assert tree(hooks_d) == expected

    proc = install("--prefix", str(prefix), "--uninstall")
    assert proc.returncode == 0 and "removed 2 cordee hook(s)" in proc.stdout
    assert tree(hooks_d) == {"10-site.sh": oct(0o644)} and not (hooks_d / "cordee").exists()
    assert install("--prefix", str(prefix), "--uninstall").returncode == 0  # nothing left: still fine


@pytest.mark.parametrize(
    "env, where",
    [
        ({}, "home/.config/enroot"),
        ({"XDG_CONFIG_HOME": "{t}/xdg"}, "xdg/enroot"),
        ({"ENROOT_CONFIG_PATH": "{t}/cfg", "XDG_CONFIG_HOME": "{t}/xdg"}, "cfg"),
    ],
)
def test_install_default_location_follows_enroot(env, where, tmp_path):
    env = {"HOME": str(tmp_path / "home"), **{k: v.format(t=tmp_path) for k, v in env.items()}}
    proc = install(env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / where / "hooks.d" / FABRIC.name).is_file()


def test_install_bad_arguments_exit_2():
    proc = install("--prefx", "/tmp/x")
    assert proc.returncode == 2 and "unknown argument '--prefx'" in proc.stderr
