"""Network (fabric) profiles as data: NCCL/libfabric/torch environment variables, each
with its value, its source and why. See `profiles/data/*.toml`; checks live in
`cordee.profiles.check` (imported on demand).

`suggest` is imported eagerly (os only); the loader and its dataclasses only when used, so
`cordee env show` does not pay for them."""

from cordee.profiles.suggest import suggest

_LOADER_NAMES = ("DATA_DIR", "FAMILIES", "Profile", "ProfileVar", "load", "names")


def __getattr__(name: str):
    if name in _LOADER_NAMES:
        from cordee.profiles import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'cordee.profiles' has no attribute {name!r}")


__all__ = [*_LOADER_NAMES, "suggest"]
