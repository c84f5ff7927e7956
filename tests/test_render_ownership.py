"""A render owns its output folder and nothing else: a stale or forged build.json, a symlink out of
the folder, or an --out that is a file never make it write or delete anything outside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cordee.errors import InputError
from cordee.images.render import render_image
from cordee.images.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    return load_spec("cpu-ci", REPO)


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("precious")
    (d / "Containerfile").write_text("precious too")
    return d


def plan_listing(out: Path, name: str, files: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "build.json").write_text(
        json.dumps({"schema": "cordee.buildplan/1", "name": name, "files": files})
    )


def test_stale_plan_cannot_delete_through_a_symlink(tmp_path, spec, outside):
    out = tmp_path / "out"
    plan_listing(out, "cpu-ci", ["link/victim", "../outside/victim", str(outside / "victim")])
    (out / "link").symlink_to(outside)
    render_image(spec, out)  # the claims are not ours to act on: ignored
    assert (outside / "victim").read_text() == "precious"
    assert (out / "link").is_symlink()


def test_a_plan_of_another_image_claims_nothing(tmp_path, spec):
    out = tmp_path / "out"
    plan_listing(out, "someone-else", ["notes.txt"])
    (out / "notes.txt").write_text("mine")
    render_image(spec, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_stale_files_of_the_same_image_are_removed(tmp_path, spec):
    out = tmp_path / "out"
    plan_listing(out, "cpu-ci", ["old-script.sh"])
    (out / "old-script.sh").write_text("stale")
    rendered = render_image(spec, out)
    assert not (out / "old-script.sh").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted({f.split("/")[0] for f in rendered.files})


def test_writing_through_a_symlinked_subfolder_is_refused(tmp_path, outside):
    spec = load_spec("pytorch-cuda-gh200", REPO)  # renders scripts/
    out = tmp_path / "out"
    out.mkdir()
    (out / "scripts").symlink_to(outside)
    before = sorted(os.listdir(outside))
    with pytest.raises(InputError, match="symbolic link out of"):
        render_image(spec, out)
    assert sorted(os.listdir(outside)) == before and (outside / "victim").read_text() == "precious"


def test_out_that_is_a_file_is_one_clear_error(tmp_path, spec):
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(InputError, match="cannot write the render into") as e:
        render_image(spec, target)
    assert "\n" not in str(e.value) and target.read_text() == "x"
