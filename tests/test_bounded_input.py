"""Reading what users give cordee never hangs and never exhausts memory or the stack:
fileio.read_bounded (FIFOs, devices, huge files, long names) and its users, EDF inheritance
fan-out, and deeply nested TOML."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cordee.edf.load import check_edf
from cordee.errors import InputError
from cordee.fileio import ReadError, read_bounded
from cordee.profiles import loader


def finishes_within(seconds: float, fn, *args):
    """fn(*args) run in a thread; fails the test (instead of hanging it) if it blocks."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} blocked for more than {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_regular_file(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100)
    assert read_bounded(tmp_path / "a") == b"x" * 100
    assert read_bounded(tmp_path / "a", limit=100) == b"x" * 100


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # nobody writes: open() for reading would block for ever
    with pytest.raises(ReadError, match="a FIFO, not a regular file"):
        finishes_within(5, read_bounded, fifo)


@pytest.mark.parametrize("path, kind", [("/dev/zero", "character device"), ("/", "directory")])
def test_devices_and_directories_are_refused(path, kind):
    with pytest.raises(ReadError, match=kind):
        finishes_within(5, read_bounded, path)


def test_larger_than_the_limit(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(10 << 20)  # sparse: costs no disk
    with pytest.raises(ReadError, match="larger than 1048576 bytes"):
        read_bounded(big, limit=1 << 20)


def test_proc_files_have_no_size_but_are_still_bounded():
    assert b"\n" in read_bounded("/proc/self/status")
    with pytest.raises(ReadError, match="larger than 10 bytes"):
        read_bounded("/proc/self/status", limit=10)


@pytest.mark.parametrize("name", ["x" * 300, "a\0b", "/nonexistent/y"])
def test_bad_names_are_one_line(tmp_path, name):
    with pytest.raises(ReadError) as e:
        read_bounded(tmp_path / name if "/" not in name else name)
    assert "\n" not in str(e.value) and isinstance(e.value, InputError)


# --- EDFs ------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path):
    (tmp_path / "edf").mkdir()
    return {"HOME": str(tmp_path), "EDF_PATH": str(tmp_path / "edf"), "PATH": "/usr/bin:/bin"}


def test_edf_named_fifo_is_a_finding_not_a_hang(tmp_path, env):
    os.mkfifo(tmp_path / "edf" / "base.toml")
    top = tmp_path / "top.toml"
    top.write_text('base_environment = "base"\nimage = "ubuntu:24.04"\n')
    report = finishes_within(10, check_edf, str(top), env)
    assert not report.ok
    assert any("not found" in f.message or "FIFO" in f.message for f in report.findings)


def test_base_environment_fan_out_is_resolved_once_per_file(tmp_path, env):
    """Each file lists the next one five times, eleven levels deep: 5**10, about ten million paths
    through the chain if every reference is followed again (three times took 4.8 s, five never
    ends); the chain is still only 12 files, and the depth limit is still reported."""
    d = tmp_path / "edf"
    for level in range(12):
        nxt = f'"l{level + 1}"' if level < 11 else None
        bases = f"base_environment = [{', '.join([nxt] * 5)}]\n" if nxt else 'image = "ubuntu:24.04"\n'
        (d / f"l{level}.toml").write_text(bases + f'mounts = ["/m{level}:/m{level}"]\n')
    start = time.monotonic()
    report = finishes_within(30, check_edf, "l0", env)
    assert time.monotonic() - start < 5
    assert any("more than 10 levels" in f.message for f in report.findings)


def test_base_environment_diamonds_do_not_multiply_mounts(tmp_path, env):
    d = tmp_path / "edf"
    for level in range(10):
        for side in "ab":
            nxt = f'["l{level + 1}a", "l{level + 1}b"]' if level < 9 else "[]"
            (d / f"l{level}{side}.toml").write_text(
                f'base_environment = {nxt}\nimage = "ubuntu:24.04"\nmounts = ["/shared:/shared"]\n'
            )
    report = finishes_within(30, check_edf, "l0a", env)
    assert report.ok, report.findings
    assert report.edf.mounts == (report.edf.mounts[0],) and len(report.edf.chain) == 19


@pytest.mark.parametrize(
    "nested", ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 3000 + "1" + "}" * 3000]
)
def test_deeply_nested_toml_is_a_finding(tmp_path, env, nested):
    path = tmp_path / "deep.toml"
    path.write_text(nested + "\n")
    report = check_edf(str(path), env)
    assert [(f.field, f.message) for f in report.findings] == [("toml", "TOML nested too deeply")]
    assert not report.ok


def test_profile_file_that_is_a_fifo_or_too_deep(tmp_path):
    os.mkfifo(tmp_path / "p.toml")
    with pytest.raises(InputError, match="FIFO"):
        finishes_within(5, loader.load, "p", tmp_path)
    Path(tmp_path / "q.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputError, match="not valid TOML: nested too deeply"):
        loader.load("q", tmp_path)


def test_control_characters_in_keys_and_values_never_split_a_finding(tmp_path, env):
    path = tmp_path / "ctl.toml"
    path.write_text('"bad\\nkey" = 1\nimage = "ubuntu:24.04"\n[env]\n"A\\u001b[31mB" = "x"\n')
    report = check_edf(str(path), env)
    assert report.findings
    for f in report.findings:
        assert f.message.isprintable() and f.field.isprintable(), f


# --- image specs -----------------------------------------------------------------------------------


def test_spec_alias_bomb_is_refused_at_once(tmp_path):
    """A 1 KB 'billion laughs': 9 aliases of 9 aliases, 9 levels deep, 387 million strings when
    walked; it must be refused before anything walks it, also under a key the schema does not know."""
    from cordee.images.spec import SpecError, load_spec

    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(["kind: container", "name: bomb", *lines, "unknown_key: *a8"]) + "\n")
    assert len(path.read_bytes()) < 1200
    start = time.monotonic()
    with pytest.raises(SpecError, match="anchors and aliases are not allowed"):
        finishes_within(20, load_spec, str(path))
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("kind", ["fifo", "zero", "deep"])
def test_spec_that_is_a_fifo_dev_zero_or_too_deep(tmp_path, kind):
    from cordee.images.spec import SpecError, load_spec

    path = tmp_path / "s.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(SpecError) as e:
        finishes_within(10, load_spec, str(path))
    assert "\n" not in str(e.value)
    assert {"fifo": "a FIFO", "zero": "character device", "deep": "nested too deeply"}[kind] in str(e.value)


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_nccl_conf_file_that_never_ends_is_skipped(tmp_path, kind):
    from cordee.interconnect.netplugin.resolve import nccl_conf_settings

    conf = tmp_path / "nccl.conf"
    if kind == "fifo":
        os.mkfifo(conf)
    else:
        conf.symlink_to("/dev/zero")
    env = {"NCCL_CONF_FILE": str(conf), "HOME": str(tmp_path)}
    settings = finishes_within(10, nccl_conf_settings, env)
    assert all(file != str(conf) for _, file in settings.values())
