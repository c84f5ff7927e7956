"""The rendered uenv recipe against stackinator 4.0 itself: its JSON-schema validators (which
also fill defaults) accept it and reject broken variants of it; its Recipe class reads it and
generates its Spack environment files; py-cordee's source archive builds a wheel."""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from cordee import __version__, profiles
from cordee.images.render import render_image
from cordee.images.spec import load_spec

schema = pytest.importorskip("stackinator.schema", reason="stackinator==4.0 (dev extra) is not installed")
from stackinator.recipe import Recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VALIDATORS = {
    "config.yaml": schema.config_validator,
    "compilers.yaml": schema.compilers_validator,
    "environments.yaml": schema.environments_validator,
}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render")
    render_image(load_spec("pytorch-uenv-gh200", REPO), out)
    return out / "uenv"


def load(recipe: Path, name: str):
    return yaml.safe_load((recipe / name).read_text())


def stackinator_recipe(recipe: Path, tmp_path: Path) -> Recipe:
    for d in ("system", "mount", "build"):
        (tmp_path / d).mkdir(exist_ok=True)
    args = argparse.Namespace(
        recipe=str(recipe),
        system=str(tmp_path / "system"),
        mount=str(tmp_path / "mount"),
        build=str(tmp_path / "build"),
        cache=None,
        develop=False,
    )
    return Recipe(args)


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_stackinator_schemas_accept_the_recipe(recipe: Path, name: str):
    data = load(recipe, name)
    VALIDATORS[name].validate(copy.deepcopy(data))


def test_stackinator_reads_the_recipe(recipe: Path, tmp_path: Path):
    spec = load_spec("pytorch-uenv-gh200", REPO).data["uenv"]
    r = stackinator_recipe(recipe, tmp_path)
    env = r.environments[spec["environment"]["name"]]
    assert f"py-cordee@{__version__}" in env["specs"]
    assert all(s in env["specs"] for s in spec["environment"]["specs"])
    assert "cray-mpich +cuda" in env["specs"]  # stackinator adds the MPI it was asked for
    assert env["view"]["name"] == spec["environment"]["view"]
    assert r.compilers["gcc"]["specs"] == [spec["compilers"]["gcc"]]
    assert r.spack_repo == recipe / "repo" and (r.spack_repo / "packages/py-cordee/package.py").is_file()
    assert r.config["spack"] == spec["spack"] and r.config["modules"] is True
    # stackinator's own templates render the Spack environment from it
    files = r.environment_files
    assert f"py-cordee@{__version__}" in files["config"][spec["environment"]["name"]]
    assert "gcc@13" in r.compiler_files["config"]["gcc"]
    modules = yaml.safe_load(r.modules_yaml)["modules"]["default"]
    assert modules["roots"]["tcl"] == str(tmp_path / "mount" / "modules")


def test_modules_set_the_fabric_profile(recipe: Path):
    spec = load_spec("pytorch-uenv-gh200", REPO)
    tcl = load(recipe, "modules.yaml")["modules"]["default"]["tcl"]
    expected = {**profiles.load(spec.data["fabric_profile"]).as_env(), **spec.data["env"]}
    assert tcl["py-cordee"]["environment"]["set"] == expected
    assert tcl["hide_implicits"] is True and tcl["hash_length"] == 0


@pytest.mark.parametrize(
    ("file", "change"),
    [
        ("compilers.yaml", lambda d: d["gcc"].update(specs=["gcc@13.2.10"])),
        ("compilers.yaml", lambda d: d.pop("bootstrap")),
        ("environments.yaml", lambda d: d["pytorch"].update(specz=["nccl"])),
        ("environments.yaml", lambda d: d["pytorch"].update(unify="sometimes")),
        ("environments.yaml", lambda d: d["pytorch"]["views"]["pytorch"].update(link="everything")),
        ("config.yaml", lambda d: d.pop("spack")),
        ("config.yaml", lambda d: d.update(modules="yes")),
    ],
)
def test_stackinator_rejects_a_broken_recipe(recipe: Path, tmp_path: Path, file: str, change):
    data = load(recipe, file)
    change(data)
    with pytest.raises(jsonschema.ValidationError):
        VALIDATORS[file].validate(data)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in recipe.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / file).write_text(yaml.safe_dump(data))
    with pytest.raises(jsonschema.ValidationError):
        stackinator_recipe(broken, tmp_path)


def test_py_cordee_source_archive_builds_a_wheel(recipe: Path, tmp_path: Path):
    package = recipe / "repo/packages/py-cordee"
    archive = (package / f"cordee-{__version__}.tar.gz").read_bytes()
    assert json.loads((package / "source.json").read_text())["sha256"] == hashlib.sha256(archive).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        assert all(n.startswith(f"cordee-{__version__}/") for n in names)
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
        tar.extractall(tmp_path / "src", filter="data")
    assert f"cordee-{__version__}/platform/cordee/profiles/data/slingshot-cscs.toml" in names
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "wheels"), str(tmp_path / "src" / f"cordee-{__version__}")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("cordee-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert {"cordee/__init__.py", "cordee/profiles/data/slingshot-cscs.toml"} <= set(z.namelist())


def test_source_archive_is_reproducible(recipe: Path, tmp_path: Path):
    again = tmp_path / "again"
    render_image(load_spec("pytorch-uenv-gh200", REPO), again)
    name = f"repo/packages/py-cordee/cordee-{__version__}.tar.gz"
    assert (again / "uenv" / name).read_bytes() == (recipe / name).read_bytes()
