"""The uenv's py-cordee Spack package, loaded without Spack through tests/spackstub: its version is
cordee's, its checksum is that of the source archive rendered next to it, and its dependencies
follow pyproject.toml (requires-python, build-system, dependencies, extras)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cordee import __version__
from cordee.images.render import render_image
from cordee.images.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "spackstub"
STATIC = REPO / "recipes/uenv/repo/packages/py-cordee/package.py"
# Extras the uenv does not take from PyPI, and why (a new extra must be decided on here).
NOT_VARIANTS = {
    "torch": "the uenv builds py-torch itself (CUDA, cuda_arch) as a root spec",
    "nccl": "the uenv has Spack's nccl; the nvidia-nccl-cu12 wheel is for pip installs",
    "nvml": "nvidia-ml-py is optional at run time; sites add py-nvidia-ml-py to the uenv if they want it",
    "uenv": "stackinator is the tool that builds uenvs, not part of one",
    "dev": "tests and linters",
    "train": "torch and numpy: the uenv builds py-torch (and with it py-numpy) as root specs",
    "plot": "matplotlib for `preflight --plot` only; sites add py-matplotlib to the uenv if they want it",
    "tokenizers": "a Rust build; `data prepare --tokenizer` runs where data is prepared, not in jobs",
    "finetune": "py-torch is a root spec of the uenv; sites that fine-tune add py-safetensors (and "
    "py-tokenizers, py-jinja2 where `data prepare --chat` runs) as root specs beside it",
}


def load_package(path: Path):
    """Import a package.py the way Spack would (as a module), with the stub as `spack`."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "spack" or k.startswith("spack.")}
    sys.path.insert(0, str(STUB))
    try:
        spec = importlib.util.spec_from_file_location(f"spack_pkg_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert sys.modules["spack.package"].__file__.startswith(str(STUB))
        return module.PyCordee
    finally:
        sys.path.remove(str(STUB))
        for k in [k for k in sys.modules if k == "spack" or k.startswith("spack.")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uenv")
    render_image(load_spec("pytorch-uenv-gh200", REPO), out)
    return out / "uenv/repo/packages/py-cordee"


def test_version_and_checksum_are_those_of_the_rendered_source(rendered: Path):
    package = load_package(rendered / "package.py")
    archive = rendered / f"cordee-{__version__}.tar.gz"
    source = json.loads((rendered / "source.json").read_text())
    assert list(package.versions) == [__version__] == [source["version"]]
    assert package.versions[__version__] == {"sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    url = package.url_for_version(None, __version__)
    assert url == archive.resolve().as_uri() or url == "file://" + str(archive)


def test_static_recipe_file_loads_without_a_source(tmp_path: Path):
    package = load_package(STATIC)  # no source.json next to it: a version without checksum
    assert package.versions == {__version__: {}}


def _spack_range(specifier) -> str:
    """PEP 440 specifiers -> a Spack version range: >=A,<B+1 -> @A:B (Spack upper bounds include
    every B.x); only the forms pyproject.toml uses are understood."""
    low = high = ""
    for s in specifier:
        if s.operator == ">=":
            low = s.version
        elif s.operator == "<" and s.version.split(".")[1:] in ([], ["0"]):
            high = str(int(s.version.split(".")[0]) - 1)
        else:
            raise AssertionError(f"no Spack range for {s} (extend _spack_range)")
    return f"@{low}:{high}" if low or high else ""


def _spack_name(requirement: Requirement) -> str:
    return "py-" + requirement.name.lower().replace("_", "-").replace(".", "-")


def test_dependencies_follow_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    package = load_package(STATIC)
    deps = {(spec, tuple(sorted(types)), when) for spec, types, when in package.dependencies}
    python = pyproject["project"]["requires-python"]
    assert python.startswith(">=")
    expected = {(f"python@{python[2:]}:", ("build", "run"), None)}
    for req in map(Requirement, pyproject["build-system"]["requires"]):
        expected.add((_spack_name(req) + _spack_range(req.specifier), ("build",), None))
    for req in map(Requirement, pyproject["project"]["dependencies"]):
        expected.add((_spack_name(req) + _spack_range(req.specifier), ("build", "run"), None))
    extras = pyproject["project"]["optional-dependencies"]
    assert set(package.variants) | set(NOT_VARIANTS) == set(extras), "decide on every extra: variant or not"
    assert not set(package.variants) & set(NOT_VARIANTS)
    for extra in package.variants:
        assert package.variants[extra]["default"] is False
        for req in map(Requirement, extras[extra]):
            expected.add((_spack_name(req) + _spack_range(req.specifier), ("run",), f"+{extra}"))
    assert deps == expected


def test_stub_refuses_what_spack_refuses():
    sys.path.insert(0, str(STUB))
    try:
        from spack import package as stub

        with pytest.raises(TypeError, match="unexpected keyword"):
            stub.version("1.0", sha265="x")
        with pytest.raises(TypeError, match="unknown dependency type"):
            stub.depends_on("py-x", type="runtime")
        with pytest.raises(TypeError, match="needs a description"):
            stub.variant("x", default=False)
        stub._pending.clear()
    finally:
        sys.path.remove(str(STUB))
        for k in [k for k in sys.modules if k == "spack" or k.startswith("spack.")]:
            del sys.modules[k]
