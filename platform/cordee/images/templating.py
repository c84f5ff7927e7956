"""The one Jinja2 Environment configuration of cordee's templates and what every template gets:
StrictUndefined (a missing value is an error, never an empty string), trim_blocks, lstrip_blocks,
keep_trailing_newline, no autoescape, and the quoting filters of images/quoting.py as the only
way values reach the output.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cordee import __version__
from cordee.errors import InputError
from cordee.images.quoting import FILTERS, QuotingError
from cordee.images.spec import ImageSpec, SpecError, find_root


@functools.lru_cache(maxsize=8)
def environment(recipes_dir: str):
    """The Jinja2 Environment for one recipes/ folder (one configuration for every template)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(recipes_dir),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    return env


def recipes_dir(spec: ImageSpec) -> Path:
    """recipes/ next to the spec's images/ folder, else the checkout's (specs given by path)."""
    root = spec.path.resolve().parent.parent
    if not (root / "recipes").is_dir():
        root = find_root()
    return root / "recipes"


def render_template(spec: ImageSpec, template: str, context: dict) -> str:
    import jinja2

    env = environment(str(recipes_dir(spec)))
    try:
        return env.get_template(template).render(**context)
    except QuotingError as e:  # a value validation let through: refuse it rather than emit it
        raise SpecError(f"{spec.path}: a value cannot be quoted safely for {template}: {e}") from None
    except jinja2.TemplateError as e:
        raise InputError(f"{recipes_dir(spec) / template}: template error: {e}") from None


def profile_env(spec: ImageSpec) -> dict[str, str]:
    from cordee import profiles

    return profiles.load(spec.data["fabric_profile"]).as_env()


def literal_env(spec: ImageSpec) -> list[tuple[str, str]]:
    """The fabric profile's variables (profile order), then the spec's env (sorted)."""
    return [*profile_env(spec).items(), *sorted(spec.data["env"].items())]


def header(spec: ImageSpec) -> dict:
    return {"name": spec.name, "version": __version__, "spec_hash": spec.spec_hash}
