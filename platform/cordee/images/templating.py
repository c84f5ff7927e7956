"""The one Jinja2 Environment configuration of cordee's templates and what every template gets:
StrictUndefined (a missing value is an error, never an empty string), trim_blocks, lstrip_blocks,
keep_trailing_newline, no autoescape, and the quoting filters of images/quoting.py as the only
way values reach the output. A recipes/ file that is missing or does not parse is an InputError
naming it (exit 2), never a traceback.
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


def _template_error(recipes: Path, template: str, e: Exception) -> InputError:
    return InputError(f"{recipes / template}: template error: {e}")


def render_template(spec: ImageSpec, template: str, context: dict) -> str:
    import jinja2

    recipes = recipes_dir(spec)
    try:
        return environment(str(recipes)).get_template(template).render(**context)
    except QuotingError as e:  # a value validation let through: refuse it rather than emit it
        raise SpecError(f"{spec.path}: a value cannot be quoted safely for {template}: {e}") from None
    except (jinja2.TemplateError, UnicodeDecodeError) as e:
        raise _template_error(recipes, template, e) from None


def read_recipe(recipes: Path, rel: str) -> bytes:
    """A file under recipes/ (template, script, package.py); a missing one is bad input, not a bug."""
    try:
        return (recipes / rel).read_bytes()
    except OSError as e:
        raise InputError(f"{recipes / rel}: cannot read this recipe file: {e.strerror or e}") from None


@functools.lru_cache(maxsize=32)
def _references(recipes: str, source: str) -> tuple[str, ...]:
    from jinja2 import meta

    env = environment(recipes)
    return tuple(ref for ref in meta.find_referenced_templates(env.parse(source)) if ref)


def referenced_templates(recipes: Path, template: str, source: bytes) -> tuple[str, ...]:
    """The templates `source` (of `template`) includes, imports or extends. Cached by source text:
    parsing is most of the time of a content key, which every render and cache check computes."""
    import jinja2

    try:
        return _references(str(recipes), source.decode("utf-8"))
    except (jinja2.TemplateError, UnicodeDecodeError) as e:
        raise _template_error(recipes, template, e) from None


def literal_env(spec: ImageSpec) -> list[tuple[str, str]]:
    """The fabric profile's variables (profile order), then the spec's env (sorted)."""
    return [*spec.profile_env.items(), *sorted(spec.data["env"].items())]


def header(spec: ImageSpec) -> dict:
    return {"name": spec.name, "version": __version__, "spec_hash": spec.spec_hash}
