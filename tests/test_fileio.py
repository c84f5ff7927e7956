"""cordee.fileio.write_atomic: the one atomic writer of EDFs, env files, build files and renders."""

import os
import stat

import pytest

from cordee.fileio import write_atomic


def test_replaces_text_and_bytes_with_mode_0644(tmp_path):
    target = tmp_path / "x.toml"
    target.write_text("old")
    os.chmod(target, 0o600)
    write_atomic(target, "new ✓\n")
    assert target.read_text(encoding="utf-8") == "new ✓\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(str(target), b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert os.listdir(tmp_path) == ["x.toml"]  # no temporary file left


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x"
    target.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # not str or bytes: fails after the temporary file exists
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["x"]
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing-dir" / "x", "data")
