"""Network (fabric) profiles as data: NCCL/libfabric/torch environment variables, each
with its value, its source and why. See `profiles/data/*.toml`; checks live in
`cordee.profiles.check` (imported on demand)."""

from cordee.profiles.loader import DATA_DIR, FAMILIES, Profile, ProfileVar, load, names, suggest

__all__ = ["DATA_DIR", "FAMILIES", "Profile", "ProfileVar", "load", "names", "suggest"]
