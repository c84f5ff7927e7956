"""Stub of `spack.package`: the directives a package class body calls, and PythonPackage.

Spack's directives are plain calls in the class body; Spack collects them when the class is
created (its DirectiveMeta). The stub does the same: calls are queued, and the metaclass moves
them onto the class being created as `versions`, `variants` and `dependencies`.
"""

from __future__ import annotations

__all__ = ["PythonPackage", "depends_on", "variant", "version"]

_VERSION_KEYS = {
    "sha256",
    "url",
    "git",
    "tag",
    "commit",
    "branch",
    "preferred",
    "deprecated",
    "expand",
    "extension",
}
_VARIANT_KEYS = {"default", "description", "values", "multi", "when", "sticky"}
_DEPENDS_KEYS = {"type", "when", "patches"}
_DEP_TYPES = {"build", "link", "run", "test"}
_pending: list[tuple[str, tuple, dict]] = []


def _check(kind: str, kwargs: dict, allowed: set[str]) -> None:
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"{kind}() got unexpected keyword argument(s) {sorted(unknown)}")


def version(ver: str, checksum: str | None = None, **kwargs) -> None:
    _check("version", kwargs, _VERSION_KEYS)
    if not isinstance(ver, str):
        raise TypeError(f"version() wants a string, got {ver!r}")
    if checksum is not None:
        kwargs["sha256"] = checksum
    _pending.append(("version", (ver,), kwargs))


def variant(name: str, **kwargs) -> None:
    _check("variant", kwargs, _VARIANT_KEYS)
    if "description" not in kwargs:
        raise TypeError("variant() needs a description")
    _pending.append(("variant", (name,), kwargs))


def depends_on(spec: str, **kwargs) -> None:
    _check("depends_on", kwargs, _DEPENDS_KEYS)
    types = kwargs.get("type", ("build", "link"))
    types = (types,) if isinstance(types, str) else tuple(types)
    if not set(types) <= _DEP_TYPES:
        raise TypeError(f"depends_on({spec!r}): unknown dependency type in {types}")
    _pending.append(("depends_on", (spec,), {**kwargs, "type": types}))


class _DirectiveMeta(type):
    def __new__(mcs, name, bases, namespace):
        cls = super().__new__(mcs, name, bases, namespace)
        cls.versions, cls.variants, cls.dependencies = {}, {}, []
        for kind, args, kwargs in _pending:
            if kind == "version":
                cls.versions[args[0]] = kwargs
            elif kind == "variant":
                cls.variants[args[0]] = kwargs
            else:
                cls.dependencies.append((args[0], kwargs.get("type"), kwargs.get("when")))
        _pending.clear()
        return cls


class PackageBase(metaclass=_DirectiveMeta):
    pass


class PythonPackage(PackageBase):
    """Spack's base class for packages installed with pip from their source."""
