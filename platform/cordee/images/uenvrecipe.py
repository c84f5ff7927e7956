"""A uenv spec as a stackinator 4.0 (recipe format v1) recipe: config, compilers, environments
and modules YAML, plus py-cordee in the recipe's Spack repo with the source it builds from.
"""

from __future__ import annotations

import hashlib
import json

from cordee import __version__
from cordee.images.spec import ImageSpec
from cordee.images.templating import header, literal_env, read_recipe, recipes_dir, render_template

UENV_TEMPLATES = {
    "uenv/config.yaml": "uenv/config.yaml.j2",
    "uenv/compilers.yaml": "uenv/compilers.yaml.j2",
    "uenv/environments.yaml": "uenv/environments.yaml.j2",
    "uenv/modules.yaml": "uenv/modules.yaml.j2",
}
PACKAGE_PY = "uenv/repo/packages/py-cordee/package.py"


def uenv_files(spec: ImageSpec) -> tuple[dict[str, bytes], dict]:
    """The recipe's files under uenv/ (path -> bytes), and this spec's part of the build plan."""
    from cordee.images.sources import source_archive

    uenv = spec.data["uenv"]
    env = literal_env(spec)  # validation refused braces in these (Spack module values)
    context = {
        **header(spec),
        "description": spec.data["description"],
        "uenv": uenv,
        "specs": [*uenv["environment"]["specs"], f"py-cordee@{__version__}"],
        "view": uenv["environment"]["view"] or uenv["environment"]["name"],
        "env": env,
    }
    files = {
        out: render_template(spec, template, context).encode() for out, template in UENV_TEMPLATES.items()
    }
    package = "uenv/repo/packages/py-cordee"
    archive = source_archive(f"cordee-{__version__}")
    files[f"{package}/package.py"] = read_recipe(recipes_dir(spec), PACKAGE_PY)
    files[f"{package}/cordee-{__version__}.tar.gz"] = archive
    source = {"version": __version__, "sha256": hashlib.sha256(archive).hexdigest()}
    files[f"{package}/source.json"] = (json.dumps(source, indent=2, sort_keys=True) + "\n").encode()
    plan = dict.fromkeys(("base", "wheelhouse", "platform", "edf", "tag"))
    plan.update(build_network=True, uenv={"recipe": "uenv", "store": uenv["store"]})
    return files, plan
