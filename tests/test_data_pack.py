"""`cordee data pack` / `data verify` with real mksquashfs, squashfuse and podman: 100,000 small
files packed twice into identical images, read back through squashfuse (verify) and inside a
container through `cordee edf run` with a `:sqsh` mount, a flipped byte in a file's data caught,
bad input and a full disk as one line and exit 2 with nothing left behind, Ctrl-C mid-pack."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cordee.errors import InputError
from cordee.storage.manifest import MANIFEST_NAME
from cordee.storage.pack import mounted, pack, verify

CORDEE = str(Path(sys.executable).with_name("cordee"))
FILES = 100_000


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed on this machine: {', '.join(missing)}")


def cordee(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CORDEE, *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(cp: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert cp.returncode == code, (cp.returncode, cp.stdout, cp.stderr)
    lines = cp.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cordee"), cp.stderr  # usage errors: "cordee data pack:"
    for word in words:
        assert word in lines[0], lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tree(root: Path, files: int, seed: int = 13) -> None:
    """`files` files of 0..4 KiB in 3 levels of directories, cut from one random buffer (fast),
    plus a link, an empty directory and a name that is not ASCII."""
    rng = random.Random(seed)
    pool = rng.randbytes(1 << 20) + b"text compresses well\n" * 50_000
    for i in range(files):
        d = os.path.join(root, f"d{i // 1000:03d}", f"e{(i // 100) % 10}")
        if i % 100 == 0:
            os.makedirs(d)
        size = rng.randrange(0, 4097)
        start = rng.randrange(0, len(pool) - size)
        with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
            f.write(pool[start : start + size])
    (root / "empty").mkdir()
    (root / "latest").symlink_to("d000/e0/f000000.bin")
    (root / "données-é").write_text("not ascii\n")


def mount_tmpfs(point: Path, size: str) -> bool:
    point.mkdir(exist_ok=True)
    cp = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, timeout=60
    )
    return cp.returncode == 0


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Iterator[Path]:
    """The 100,000 files, on a tmpfs where this test may mount one (root): creating them on a
    disk that other jobs keep busy took from 3 to 60 s."""
    need_tools("mksquashfs")
    point = tmp_path_factory.mktemp("big")
    on_tmpfs = mount_tmpfs(point, "1g")
    try:
        make_tree(point / "dataset", FILES)
        yield point / "dataset"
    finally:
        if on_tmpfs:
            subprocess.run(["umount", str(point)], check=True, timeout=60)


@pytest.fixture(scope="module")
def image(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("img") / "dataset.sqsh"
    result = pack(str(tree), str(out))
    assert result.files == FILES + 1 and result.image == str(out) and out.stat().st_size == result.image_bytes
    return out


def test_packing_twice_gives_identical_images(tree, image, tmp_path):
    again = pack(str(tree), str(tmp_path / "again.sqsh"))
    assert sha256(Path(again.image)) == sha256(image)
    assert sorted(os.listdir(tmp_path)) == ["again.sqsh"]  # no temporary left beside it


def test_verify_reads_every_file_back_through_squashfuse(image, tree):
    need_tools("squashfuse")
    result = verify(str(image))
    assert result.ok and result.problems == [] and result.files == FILES + 1
    with mounted(str(image)) as root:  # the manifest inside, and files spot-checked byte by byte
        assert os.path.ismount(root)
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_bytes())
        for name in ("d000/e0/f000000.bin", "d099/e9/f099999.bin", "d042/e3/f042317.bin", "données-é"):
            assert (Path(root) / name).read_bytes() == (tree / name).read_bytes()
        assert os.readlink(Path(root) / "latest") == "d000/e0/f000000.bin"
        assert (Path(root) / "empty").is_dir()
    assert manifest["files"] == FILES + 1
    by_path = {e["path"]: e for e in manifest["entries"]}
    assert by_path["latest"] == {"path": "latest", "type": "link", "target": "d000/e0/f000000.bin"}
    assert by_path["d042/e3/f042317.bin"]["sha256"] == sha256(tree / "d042/e3/f042317.bin")
    assert by_path["empty"]["type"] == "dir" and MANIFEST_NAME not in by_path


def tools_image(tmp: Path) -> Path:
    """A squashfs root filesystem with the host's sh, cat, find, sort, xargs and sha256sum."""
    root = tmp / "tools-root"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "data"):
        (root / d).mkdir(parents=True)
    for tool in ("dash", "cat", "find", "sort", "xargs", "sha256sum"):
        path = shutil.which(tool)
        shutil.copy2(path, root / "bin" / tool)
        libs = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
        for word in libs.split():
            if word.startswith("/") and os.path.exists(word):
                (root / word.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(word, root / word.lstrip("/"))
    (root / "bin/sh").symlink_to("dash")
    out = tmp / "tools.sqsh"
    subprocess.run(
        ["mksquashfs", str(root), str(out), "-noappend", "-quiet", "-no-progress", "-all-root"],
        check=True,
        timeout=120,
    )
    return out


@pytest.mark.podman
def test_edf_run_reads_the_image_byte_identical(image, tree, tmp_path):
    """Every file of the image checksummed inside a container that mounts it with `:sqsh`,
    against the same listing computed here from SRC (no cordee code on either side of the
    comparison): all 100,000 files byte-identical."""
    need_tools("podman", "squashfuse")
    edf = tmp_path / "tools.toml"
    edf.write_text(
        f'image = "{tools_image(tmp_path)}"\nentrypoint = false\nworkdir = "/data"\n'
        f'mounts = ["{image}:/data:sqsh"]\n[env]\nLC_ALL = "C"\nPATH = "/bin"\n'
    )
    script = (
        "find ./d[0-9]* -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; "
        "find . -type l; cat ./données-é"
    )
    cp = cordee("edf", "run", str(edf), "--", "/bin/sh", "-c", script, timeout=300)
    assert cp.returncode == 0, cp.stderr
    files = sorted(os.fsencode(p.relative_to(tree)) for p in tree.glob("d[0-9]*/*/*"))
    listing = b"".join(
        hashlib.sha256((tree / os.fsdecode(f)).read_bytes()).hexdigest().encode() + b"  ./" + f + b"\n"
        for f in files
    )
    assert len(files) == FILES
    assert cp.stdout.split("\n") == [f"{hashlib.sha256(listing).hexdigest()}  -", "./latest", "not ascii", ""]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_scancel_mid_pack_leaves_nothing(tree, tmp_path, sig):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [CORDEE, "data", "pack", str(tree), str(out_dir / "x.sqsh"), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.suffix == ".tmp" and "manifest" not in p.name for p in out_dir.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "mksquashfs never started"
            time.sleep(0.02)
        proc.send_signal(sig)  # while mksquashfs writes the image
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err.strip() == "cordee: interrupted"
    assert list(out_dir.iterdir()) == []


def small_tree(root: Path) -> Path:
    """A few files and one of 1 MiB of random bytes: incompressible, so mksquashfs stores its
    blocks as they are and a pattern from its middle can be found in the image."""
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(random.Random(7).randbytes(1 << 20))
    (root / "sub" / "a.txt").write_text("a\n" * 1000)
    (root / "b.txt").write_text("b\n")
    return root


def test_same_content_with_other_times_and_modes_gives_the_same_image(tmp_path):
    need_tools("mksquashfs")
    first = pack(str(small_tree(tmp_path / "a")), str(tmp_path / "a.sqsh"))
    src = small_tree(tmp_path / "b")
    for path in (src / "big.bin", src / "sub", src / "sub" / "a.txt"):
        os.utime(path, (1_000_000, 2_000_000))
    os.chmod(src / "b.txt", 0o600)  # readable by all in the image anyway (owner root)
    second = pack(str(src), str(tmp_path / "b.sqsh"))
    assert sha256(Path(first.image)) == sha256(Path(second.image))
    assert first.manifest_sha256 == second.manifest_sha256


def test_flipped_byte_in_file_data_is_caught(tmp_path):
    need_tools("mksquashfs", "squashfuse")
    src = small_tree(tmp_path / "src")
    out = tmp_path / "x.sqsh"
    assert cordee("data", "pack", str(src), str(out), "--quiet").returncode == 0
    assert cordee("data", "verify", str(out), "--quiet").returncode == 0
    data = bytearray(out.read_bytes())
    pattern = (src / "big.bin").read_bytes()[500_000:500_064]
    at = data.find(pattern)
    assert at > 0 and data.find(pattern, at + 1) == -1
    data[at + 10] ^= 0x01
    out.write_bytes(bytes(data))
    cp = cordee("data", "verify", str(out), "--quiet")
    assert cp.returncode == 1, cp.stderr
    head, *problems = cp.stdout.splitlines()
    assert head.endswith("x.sqsh: 1 problem against the manifest")
    assert len(problems) == 1 and problems[0].startswith("  big.bin: content differs")
    doc = json.loads(cordee("data", "verify", str(out), "--json", "--quiet").stdout)
    assert doc["schema"] == "cordee.data.verify/1" and doc["ok"] is False and len(doc["problems"]) == 1


def test_verify_names_missing_extra_and_changed_files(tmp_path):
    """An image whose manifest (written here by hand) disagrees with its files."""
    need_tools("mksquashfs", "squashfuse")
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "same.txt").write_text("same\n")
    (root / "changed.txt").write_text("new\n")
    (root / "d" / "extra.txt").write_text("x\n")
    (root / "link").symlink_to("elsewhere")

    def entry(path, content):
        digest = hashlib.sha256(content).hexdigest()
        return {"path": path, "type": "file", "size": len(content), "sha256": digest}

    entries = [
        entry("changed.txt", b"old\n"),
        {"path": "d", "type": "dir"},
        {"path": "link", "type": "link", "target": "same.txt"},
        entry("missing.txt", b"m\n"),
        entry("same.txt", b"same\n"),
    ]
    (root / MANIFEST_NAME).write_text(json.dumps({"schema": "cordee.pack/1", "entries": entries}))
    out = tmp_path / "m.sqsh"
    subprocess.run(["mksquashfs", str(root), str(out), "-quiet", "-no-progress"], check=True, timeout=60)
    result = verify(str(out))
    new = hashlib.sha256(b"new\n").hexdigest()
    assert not result.ok and result.problems == [
        f"changed.txt: content differs (sha256 {new[:12]}..., manifest {entries[0]['sha256'][:12]}...)",
        "extra: d/extra.txt (not in the manifest)",
        "link: link to 'elsewhere', the manifest says 'same.txt'",
        "missing: missing.txt",
    ]


def test_damaged_or_foreign_images_exit_2(tmp_path):
    need_tools("mksquashfs", "squashfuse")
    src = small_tree(tmp_path / "src")
    good = tmp_path / "good.sqsh"
    pack(str(src), str(good))
    data = good.read_bytes()
    (tmp_path / "magic.sqsh").write_bytes(b"XXXX" + data[4:])
    (tmp_path / "cut.sqsh").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.sqsh").write_text("hello\n")
    (tmp_path / "empty.sqsh").write_bytes(b"")
    plain = tmp_path / "plain.sqsh"
    subprocess.run(["mksquashfs", str(src), str(plain), "-quiet", "-no-progress"], check=True, timeout=60)
    os.mkfifo(tmp_path / "fifo.sqsh")
    cases = {
        "magic.sqsh": "not a squashfs 4 image",
        "cut.sqsh": "truncated",
        "text.sqsh": "not a squashfs 4 image",
        "empty.sqsh": "not a squashfs 4 image",
        "plain.sqsh": f"no {MANIFEST_NAME} inside",
        "fifo.sqsh": "not a regular file",
        "gone.sqsh": "no such file",
        "src": "not a regular file",
    }
    for name, words in cases.items():
        one_line_error(cordee("data", "verify", str(tmp_path / name)), 2, name, words)


def test_bad_input_to_pack_exits_2_and_leaves_nothing(tmp_path):
    need_tools("mksquashfs")
    src = small_tree(tmp_path / "src")
    (tmp_path / "file").write_text("x")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / "have.sqsh"
    existing.write_text("keep me")
    cases = [
        ((tmp_path / "missing", out_dir / "a.sqsh"), ["missing", "No such file", "SRC must be a directory"]),
        ((tmp_path / "file", out_dir / "a.sqsh"), ["file", "not a directory"]),
        ((src, tmp_path / "nodir" / "a.sqsh"), ["nodir", "no such directory"]),
        ((src, existing), ["have.sqsh exists", "--force"]),
        ((src, out_dir), ["a directory"]),
        ((src, src / "sub" / "a.sqsh"), ["inside SRC"]),
    ]
    for (s, o), words in cases:
        one_line_error(cordee("data", "pack", str(s), str(o)), 2, *words)
    assert existing.read_text() == "keep me" and os.listdir(out_dir) == ["have.sqsh"]
    bad = tmp_path / "bad"
    bad.mkdir()
    os.mkfifo(bad / "pipe")
    one_line_error(cordee("data", "pack", str(bad), str(out_dir / "b.sqsh")), 2, "pipe", "a FIFO")
    (bad / "pipe").unlink()
    (bad / MANIFEST_NAME).write_text("{}")
    one_line_error(cordee("data", "pack", str(bad), str(out_dir / "b.sqsh")), 2, MANIFEST_NAME)
    cp = cordee("data", "pack", str(src), str(out_dir / "c.sqsh"), "--mount-point", "data")
    one_line_error(cp, 2, "absolute")
    assert os.listdir(out_dir) == ["have.sqsh"]
    cp = cordee("data", "pack", str(src), str(existing), "--force", "--json", "--mount-point", "/ds")
    doc = json.loads(cp.stdout)
    assert doc["schema"] == "cordee.data.pack/1" and doc["mount"] == f"{existing}:/ds:sqsh"
    assert doc["files"] == 3 and doc["bytes"] == (1 << 20) + 2000 + 2
    assert doc["image_bytes"] == existing.stat().st_size
    assert existing.read_bytes()[:4] == b"hsqs" and os.listdir(out_dir) == ["have.sqsh"]
    cp = cordee("data", "pack", str(src), str(out_dir / "d.sqsh"))
    assert cp.returncode == 0 and f'EDF mount: "{out_dir / "d.sqsh"}:/data:sqsh"' in cp.stdout


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (this test runs as root); unmounted afterwards."""
    point = tmp_path / "tiny"
    if not mount_tmpfs(point, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True, timeout=60)


def test_no_space_left_exits_2_and_leaves_nothing(tmp_path, tiny_fs):
    need_tools("mksquashfs")
    src = small_tree(tmp_path / "src")
    for i in range(3):
        (src / f"more{i}.bin").write_bytes(random.Random(i).randbytes(1 << 20))
    one_line_error(cordee("data", "pack", str(src), str(tiny_fs / "x.sqsh")), 2, "no space left")
    assert os.listdir(tiny_fs) == []


def test_verify_without_fuse_unpacks_into_a_temporary_directory_it_removes(tmp_path):
    """Where squashfuse cannot be used (here: not on PATH), verify reads an unsquashfs copy that
    it removes afterwards, and never fills the image cache with a dataset."""
    need_tools("mksquashfs", "unsquashfs")
    src = small_tree(tmp_path / "src")
    out = tmp_path / "x.sqsh"
    assert cordee("data", "pack", str(src), str(out), "--quiet").returncode == 0
    bin_dir, home, tmp = tmp_path / "bin", tmp_path / "home", tmp_path / "tmp"
    for d in (bin_dir, home, tmp):
        d.mkdir()
    (bin_dir / "unsquashfs").symlink_to(shutil.which("unsquashfs"))  # and no squashfuse
    env = {"PATH": str(bin_dir), "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
    cp = subprocess.run([CORDEE, "data", "verify", str(out), "--quiet"], env=env, capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    assert "3 files" in cp.stdout or "match the manifest" in cp.stdout, cp.stdout
    assert list(tmp.iterdir()) == [] and not (home / ".cache").exists()


def test_mounted_without_unpacking_names_why_it_cannot_mount(tmp_path, monkeypatch):
    """io bench measures the mount itself: with unpack=False there is no unsquashfs fallback,
    only one line saying why (here: squashfuse not on PATH)."""
    need_tools("mksquashfs")
    image = tmp_path / "x.sqsh"
    pack(str(small_tree(tmp_path / "src")), str(image))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(InputError, match="squashfuse is not installed"):
        with mounted(str(image), unpack=False):
            pass
