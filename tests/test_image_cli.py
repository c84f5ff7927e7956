"""`cordee image list | validate | render | build` as a user runs them: the installed `cordee`
command on the repository's real specs, exit codes and one-line errors (never a traceback)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
CORDEE = str(Path(sys.executable).with_name("cordee"))
SPECS = sorted(p.stem for p in (ROOT / "images").glob("*.yaml"))


def cordee(*args: str, timeout: float = 120, env: dict | None = None, cwd: Path = ROOT):
    return subprocess.run(
        [CORDEE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env or os.environ
    )


def one_line_error(cp: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2 and exactly one line on stderr (every line counts, not only those saying "error")."""
    assert cp.returncode == 2, cp
    assert "Traceback" not in cp.stderr
    lines = cp.stderr.splitlines()
    assert len(lines) == 1, cp.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_list_shows_every_spec_with_its_kind():
    cp = cordee("image", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["schema"] == "cordee.imagelist/1" and Path(doc["root"]) == ROOT
    assert [i["name"] for i in doc["images"]] == SPECS
    kinds = {i["name"]: i["kind"] for i in doc["images"]}
    assert kinds["cpu-ci"] == "container" and "uenv" in kinds.values()
    text = cordee("image", "list")
    assert text.returncode == 0 and all(name in text.stdout for name in SPECS)


def test_validate_all_and_a_bad_spec(tmp_path):
    cp = cordee("image", "validate", "--all")
    assert cp.returncode == 0, cp.stderr
    assert [line.split(":")[0] for line in cp.stdout.splitlines()] == SPECS
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "images" / "cpu-ci.yaml").read_text() + "\nno_such_field: 1\n")
    one_line_error(cordee("image", "validate", str(bad)), "no_such_field", str(bad))
    one_line_error(cordee("image", "validate", "does-not-exist"), "does-not-exist")
    one_line_error(cordee("image", "validate"), "--all")


def test_render_one_spec_into_a_directory(tmp_path):
    out = tmp_path / "out"
    cp = cordee("image", "render", "cpu-ci", "--out", str(out))
    assert cp.returncode == 0, cp.stderr
    plan = json.loads((out / "build.json").read_text())
    assert plan["schema"] == "cordee.buildplan/1" and plan["name"] == "cpu-ci"
    assert plan["sqsh"] == str(out / "cpu-ci.sqsh") and plan["tag"].startswith("localhost/cordee/cpu-ci:")
    with open(out / "Containerfile", "rb") as f:
        assert DockerfileParser(fileobj=f).baseimage == plan["base"]["tag"]
    again = cordee("image", "render", "cpu-ci", "--out", str(tmp_path / "again"))
    assert again.returncode == 0
    assert (tmp_path / "again" / "Containerfile").read_text() == (out / "Containerfile").read_text()
    one_line_error(cordee("image", "render", "--all", "--out", str(out)), "--out")


def test_help_lists_the_subcommands():
    cp = cordee("image", "--help")
    assert cp.returncode == 0
    for verb in ("list", "validate", "render", "build"):
        assert verb in cp.stdout
    assert "--force" in cordee("image", "build", "--help").stdout


def test_build_of_a_uenv_spec_renders_and_explains(tmp_path):
    uenv = next(n for n in SPECS if "uenv" in n)
    cp = cordee("image", "build", uenv, "--json", env={**os.environ, "EDF_PATH": str(tmp_path)})
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["kind"] == "uenv" and doc["built"] is False
    assert (Path(doc["recipe"]) / "config.yaml").is_file()
    assert "stack-config" in cp.stderr and "--recipe" in cp.stderr
    assert not any(tmp_path.iterdir())  # no EDF for a uenv


@pytest.mark.podman
def test_build_with_a_registry_base_that_is_not_local(tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    cp = cordee("image", "build", "pytorch-ngc-gh200", env={**os.environ, "EDF_PATH": str(tmp_path)})
    # a build reports its steps on stderr ("...: [1/7] render ..."); after them, the error is one line
    progress = re.compile(r"cordee image build [\w.-]+: \[\d+/\d+\] ")
    lines = cp.stderr.splitlines(keepends=True)
    steps = [line for line in lines if progress.match(line)]
    assert steps and lines[: len(steps)] == steps
    after = subprocess.CompletedProcess(cp.args, cp.returncode, cp.stdout, "".join(lines[len(steps) :]))
    one_line_error(after, "nvcr.io/nvidia/pytorch", "podman pull")
    assert not any(tmp_path.iterdir())


def test_build_of_an_unknown_spec():
    one_line_error(cordee("image", "build", "no-such-image"), "no-such-image")
