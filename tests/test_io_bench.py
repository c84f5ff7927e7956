"""`cordee io bench` as a user runs it: a quick run on a real directory (every figure, the
squashfs-against-tree ratio through a real squashfuse mount), bad input, a rank that never
arrives, the page-cache dropping and the phase timeout against real kernel behaviour, and the
checkpoint pattern of several ranks on the Slurm test cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launchvars import clean_env

from cordee.errors import CordeeError
from cordee.storage import iofs

CORDEE = str(Path(sys.executable).with_name("cordee"))
PHASES = ("metadata:", "sequential:", "random reads:", "squashfs:")


def bench(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CORDEE, "io", "bench", *args], env=env or clean_env(), capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def figures(doc: dict) -> dict[str, dict]:
    return {f["name"]: f for f in doc["figures"]}


def findmnt_type(path: Path) -> str:
    return subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True, timeout=10
    ).stdout.split()[-1]  # the last of stacked mounts is the one in use


def test_quick_run_reports_every_figure_with_its_cache_note_and_the_squashfs_ratio(tmp_path):
    r = bench(str(tmp_path), "--quick", "--files", "300", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cordee.io/1" and doc["settings"]["files"] == 300
    for phase in PHASES:  # progress on stderr, per phase
        assert phase in r.stderr
    assert doc["filesystem"]["type"] == findmnt_type(tmp_path)
    assert doc["filesystem"]["free_bytes"] > 0 and doc["host"] and doc["kernel"] and doc["date"]
    figs = figures(doc)
    expected = {"create", "stat", "open+read", "sequential write", "sequential read", "random read 4 KiB",
                "random read 64 KiB", "random read 1024 KiB", "tree open+read", "squashfs open+read",
                "squashfs/tree open+read"}  # fmt: skip
    assert expected <= set(figs)
    for f in doc["figures"]:
        assert f.get("skipped") is None, f
        assert f["value"] > 0 and f["unit"] and f["cache"] and f["ops"] > 0 and f["seconds"] > 0, f
    for name in ("open+read", "tree open+read", "squashfs open+read"):
        assert figs[name]["ops"] == 300 and figs[name]["bytes"] == 300 * 4096
    assert figs["sequential read"]["bytes"] == doc["settings"]["size"]
    assert "warm" in figs["stat"]["cache"]
    droppable = doc["filesystem"]["page_cache"].startswith("droppable")
    assert ("pages dropped" in figs["open+read"]["cache"]) == droppable
    ratio = figs["squashfs/tree open+read"]
    expect = figs["squashfs open+read"]["value"] / figs["tree open+read"]["value"]
    assert ratio["value"] == pytest.approx(expect)
    assert doc["checkpoint"] is None  # one rank: no checkpoint pattern
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone


def test_table_output_and_keep(tmp_path):
    r = bench(str(tmp_path), "--quick", "--files", "20", "--size", "1M", "--keep")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split()[:3] == ["figure", "value", "unit"]
    assert any(line.startswith("squashfs/tree open+read") for line in lines)
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("cordee-io-") and str(kept[0]) in r.stderr


@pytest.mark.parametrize(
    "case", ["missing", "file", "fifo", "no-space", "bad-size", "few-files", "no-path"]
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case):
    target = tmp_path / "target"
    args = [str(target), "--quick"]
    if case == "file":
        target.write_text("x")
    elif case == "fifo":
        os.mkfifo(target)
    elif case == "no-space":
        target.mkdir()
        free = shutil.disk_usage(target).free
        if free > 3 << 40:
            pytest.skip("more than 3 TiB free: --size 4T fits")
        args += ["--size", "4T"]
    elif case == "bad-size":
        target.mkdir()
        args += ["--size", "12Q"]
    elif case == "few-files":
        target.mkdir()
        args += ["--files", "5"]
    elif case == "no-path":
        args = ["--quick"]
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else None
    r = bench(*args, timeout=30)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    if before is not None:
        assert sorted(p.name for p in target.iterdir()) == before
    if case == "no-space":
        assert "free, the bench needs" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_removes_its_scratch_directory(tmp_path, sig):
    p = subprocess.Popen(
        [CORDEE, "io", "bench", str(tmp_path), "--files", "20000"], env=clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "metadata: creating" in p.stderr.readline()
        p.send_signal(sig)
        err = p.stderr.read()
        p.wait(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "cordee: interrupted", err
    assert list(tmp_path.iterdir()) == []


def test_a_rank_that_never_arrives_exits_3_naming_it(tmp_path):
    """Rank 0 of two (launched as torchrun would), with rank 1 never started."""
    env = clean_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_PORT=str(20000 + os.getpid() % 9999))
    t0 = time.monotonic()
    r = bench(str(tmp_path), "--quick", "--timeout", "2", env=env, timeout=60)
    assert r.returncode == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("cordee: error:")]
    assert len(errors) == 1 and "rank(s) 1 (" in errors[0] and "never arrived within 2 s" in errors[0]
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []


def test_two_ranks_on_one_host_meet_through_files(tmp_path):
    port = str(21000 + os.getpid() % 8999)
    envs = [clean_env(RANK=str(r), WORLD_SIZE="2", MASTER_PORT=port) for r in (1, 0)]
    argv = [CORDEE, "io", "bench", str(tmp_path), "--quick", "--files", "20", "--size", "2M", "--json"]
    procs = [subprocess.Popen(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for e in envs]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == ""  # only rank 0 prints the document
    ckpt = json.loads(outs[1][0])["checkpoint"]
    assert [r["rank"] for r in ckpt["ranks"]] == [0, 1]
    assert all(r["bytes"] == 2 << 20 and r["seconds"] > 0 for r in ckpt["ranks"])
    assert ckpt["slowest"]["seconds"] == max(r["seconds"] for r in ckpt["ranks"])
    assert list(tmp_path.iterdir()) == []


def test_fadvise_drops_a_files_pages(tmp_path):
    if iofs.undroppable(findmnt_type(tmp_path)):
        pytest.skip(f"{tmp_path} is on {findmnt_type(tmp_path)}: its pages cannot be dropped")
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(4 << 20))
    path.read_bytes()
    assert iofs.resident_fraction(str(path)) > 0.9
    iofs.drop_file(str(path))
    assert iofs.resident_fraction(str(path)) < 0.1
    assert iofs.probe_drop(str(tmp_path), findmnt_type(tmp_path)) is None


def test_tmpfs_pages_stay_and_the_probe_says_so():
    shm = Path("/dev/shm")
    if not shm.is_dir() or findmnt_type(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    scratch = shm / f"cordee-io-test-{os.getpid()}"
    scratch.mkdir()
    try:  # the measured path: a type cordee does not know as undroppable, on a tmpfs
        assert "not droppable on unknownfs (100%" in iofs.probe_drop(str(scratch), "unknownfs")
        assert iofs.probe_drop(str(scratch), "tmpfs") == "page cache: not droppable on tmpfs"
    finally:
        shutil.rmtree(scratch)


def test_a_phase_blocked_in_the_kernel_is_abandoned_at_its_timeout(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    bounded = iofs.Bounded(0.5)
    t0 = time.monotonic()
    with pytest.raises(iofs.Stalled, match="open did not finish within 0.5 s") as e:
        bounded("open", lambda: open(fifo, "rb"))  # open(2) of a FIFO blocks until a writer comes
    assert e.value.exit_code == 3 and time.monotonic() - t0 < 5
    assert bounded.cancel.is_set()
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the abandoned thread
    with pytest.raises(CordeeError, match="open: '.*missing' No such file"):
        iofs.Bounded(5)("open", lambda: open(tmp_path / "missing", "rb"))


@pytest.mark.slurm
def test_checkpoint_pattern_across_three_nodes(slurm_cluster, tmp_path):
    r = slurm_cluster.srun(
        ["-N3", "--ntasks-per-node=1", CORDEE, "io", "bench", str(tmp_path), "--quick", "--files", "50",
         "--size", "4M", "--timeout", "60", "--json"],
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ckpt = doc["checkpoint"]
    nodes = slurm_cluster.node_names[:3]
    assert sorted(r["node"] for r in ckpt["ranks"]) == nodes and ckpt["nodes"] == nodes
    assert [r["rank"] for r in ckpt["ranks"]] == [0, 1, 2]
    assert ckpt["slowest"]["node"] in nodes
    fig = figures(doc)["checkpoint write (3 ranks)"]
    assert fig["bytes"] == 3 * (4 << 20) and fig["value"] > 0 and fig["seconds"] == ckpt["slowest"]["seconds"]
    assert doc["settings"]["ranks"] == 3 and doc["settings"]["scheduler"] == "slurm"
    assert list(tmp_path.iterdir()) == []
