# Spack package for cordee's runtime library, shipped in every cordee uenv (stackinator recipe
# repo/packages/py-cordee). `cordee image render` copies this file into the rendered recipe
# together with the source it builds from: cordee-VERSION.tar.gz (packed from the checkout the
# recipe was rendered from) and source.json (its version and sha256). Spack checks that sha256.
#
# Versions and dependencies must follow pyproject.toml; tests/test_spack_package.py compares them.
# ruff: noqa: F403, F405 (Spack's package API comes from `from spack.package import *`)
import json
import os

from spack.package import *

_HERE = os.path.dirname(os.path.abspath(__file__))


def _checksum(version):
    """{"sha256": ...} for the archive rendered next to this file, {} where there is none (Spack
    then only refuses to fetch it, everything else about the package still works)."""
    try:
        with open(os.path.join(_HERE, "source.json")) as f:
            source = json.load(f)
    except OSError:
        return {}
    return {"sha256": source["sha256"]} if source.get("version") == version else {}


class PyCordee(PythonPackage):
    """Container-native ML platform toolkit for Slurm GPU supercomputers: launch environment,
    fabric profiles (NCCL, libfabric over Slingshot), preflight checks."""

    version("0.1.0", **_checksum("0.1.0"))

    variant("images", default=False, description="cordee image / edf render (Jinja2, PyYAML)")

    depends_on("python@3.11:", type=("build", "run"))
    depends_on("py-setuptools@77:", type="build")
    depends_on("py-wheel", type="build")
    depends_on("py-click@8.1:8", type=("build", "run"))
    depends_on("py-jinja2@3.1:3", type="run", when="+images")
    depends_on("py-pyyaml@6.0:6", type="run", when="+images")

    def url_for_version(self, version):
        return "file://" + os.path.join(_HERE, f"cordee-{version}.tar.gz")
