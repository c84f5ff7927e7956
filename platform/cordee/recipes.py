"""Templates the runtime renders (`recipes/ci/`, `recipes/job/`): the CI job of
`cordee preflight ci-template` and the sbatch script of `cordee job render`.

They live in the checkout's recipes/ with the image templates and reach installed copies through
`platform/cordee/recipes`, a link to ../../recipes that setuptools follows (package-data in
pyproject.toml). Rendering goes through the one Jinja2 Environment of images/templating.py, so
the same StrictUndefined and quoting filters apply; Jinja2 is the `images` extra.
"""

from __future__ import annotations

from pathlib import Path

from cordee.errors import InputError

PACKAGED = Path(__file__).resolve().parent / "recipes"


def recipes_dir() -> Path:
    """The folder holding ci/ and job/: the package's copy (a link into the checkout there)."""
    if not PACKAGED.is_dir():
        raise InputError(f"{PACKAGED}: the runtime templates are missing from this installation")
    return PACKAGED


def render(template: str, context: dict) -> str:
    """`template` (relative to recipes/, e.g. "job/sbatch.sh.j2") rendered with `context`."""
    try:
        import jinja2
    except ImportError:
        raise InputError("rendering templates needs Jinja2: pip install 'cordee[images]'") from None
    from cordee.images.quoting import QuotingError
    from cordee.images.templating import environment

    folder = recipes_dir()
    try:
        return environment(str(folder)).get_template(template).render(**context)
    except QuotingError as e:
        raise InputError(f"{template}: a value cannot be quoted safely: {e}") from None
    except (jinja2.TemplateError, UnicodeDecodeError) as e:
        raise InputError(f"{folder / template}: template error: {e}") from None
