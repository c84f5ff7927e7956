"""Image specs: the schema (fields, grammars), loading and validation of images/*.yaml."""

from cordee.images.spec.load import (  # noqa: F401  (the spec API: cordee.images.spec.load_spec, ...)
    ImageSpec,
    SpecError,
    canonical_json,
    find_root,
    list_specs,
    load_spec,
)
