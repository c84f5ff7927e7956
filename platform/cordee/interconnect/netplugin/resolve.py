"""Which net plugin NCCL would load: NCCL_NET_PLUGIN and nccl.conf, as NCCL reads them.

Reproduced from NCCL's src/plugin/net.cc and plugin_open.cc (NCCL 2.2x): NCCL_NET_PLUGIN unset
-> "libnccl-net.so"; "none" (any case) or "" -> no external plugin; otherwise a comma-separated
list, each entry X tried as X itself, then as "libnccl-net-X.so" unless X contains "/" or
already looks like "lib*.so". Names without "/" go through the dynamic linker's search
(LD_LIBRARY_PATH, ld.so.cache, ...), so the dlopen itself happens in the probe child with the
caller's environment. Like NCCL, settings from NCCL_CONF_FILE (or ~/.nccl.conf) and then
/etc/nccl.conf fill in variables the environment does not set.

Nothing here loads a library: these are the cheap checks run before anything is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cordee.errors import InputError
from cordee.fileio import ReadError, read_bounded

DEFAULT_PLUGIN = "libnccl-net.so"
CONF_MAX_BYTES = 1 << 20
SYSTEM_CONF_FILE = "/etc/nccl.conf"
MAX_NAME_LEN = 255  # NCCL skips list entries this long or longer


class PluginError(InputError):
    """NCCL_NET_PLUGIN (or an explicit path) names a file that does not exist."""


def disabled_error(requested: str | None) -> str:
    return f"disabled: NCCL_NET_PLUGIN={requested!r}, NCCL uses only its internal IB/socket transports"


def plugin_entries(value: str | None) -> list[str]:
    """The plugin names NCCL reads from NCCL_NET_PLUGIN (None = unset = the default)."""
    if value is None:
        return [DEFAULT_PLUGIN]
    if value.lower() == "none":
        return []
    # strtok(",") semantics: empty entries vanish
    return [name for name in value.split(",") if name and len(name) < MAX_NAME_LEN]


def candidate_names(value: str | None) -> list[str]:
    """Every name NCCL hands to dlopen for NCCL_NET_PLUGIN=value, in its order."""
    names: list[str] = []
    for entry in plugin_entries(value):
        names.append(entry)
        if value is not None and "/" not in entry and not (entry.startswith("lib") and entry.endswith(".so")):
            names.append(f"libnccl-net-{entry}.so")
    return names


def _conf_files(environ: Mapping[str, str]) -> list[str]:
    user_file = environ.get("NCCL_CONF_FILE")
    if not user_file:
        try:
            import pwd

            user_file = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".nccl.conf")  # NCCL: getpwuid
        except (ImportError, KeyError):
            user_file = None
    return [f for f in (user_file, SYSTEM_CONF_FILE) if f]


def nccl_conf_settings(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Variables NCCL would add from its config files: {name: (value, file)}.

    NCCL reads NCCL_CONF_FILE (else ~/.nccl.conf), then /etc/nccl.conf, with setenv(..., 0):
    the environment wins, then the first file. Lines are KEY=VALUE; a leading '#' is a comment.
    """
    found: dict[str, tuple[str, str]] = {}
    for path in _conf_files(environ):
        try:  # bounded and non-blocking: NCCL_CONF_FILE may name a FIFO or /dev/zero
            lines = read_bounded(path, limit=CONF_MAX_BYTES).decode("utf-8", "replace").splitlines()
        except ReadError:
            continue  # as NCCL: a file it cannot read adds nothing
        for line in lines:
            if line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            if key and key not in environ and key not in found:
                found[key] = (value, path)
    return found


def check_paths(entries: list[str], what: str) -> None:
    """PluginError for an entry that is a path (has a '/') to nothing: bad input, not a finding."""
    for entry in entries:
        if "/" in entry and not os.path.exists(entry):
            raise PluginError(
                f"{what}: {entry} does not exist (a path must name the plugin file; a bare name X is "
                f"looked up as X and libnccl-net-X.so on the library path; 'none' disables plugins)"
            )


def _requested(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """NCCL_NET_PLUGIN's value and a description of where it came from (for messages)."""
    if "NCCL_NET_PLUGIN" in environ:
        return environ["NCCL_NET_PLUGIN"], "NCCL_NET_PLUGIN"
    conf = nccl_conf_settings(environ).get("NCCL_NET_PLUGIN")
    if conf:
        return conf[0], f"NCCL_NET_PLUGIN (set in {conf[1]})"
    return None, "NCCL_NET_PLUGIN"


def plugin_request(environ: Mapping[str, str] = os.environ) -> tuple[str | None, list[str]]:
    """(requested, candidate names in NCCL's order), loading nothing: the cheap bad-input check.

    Raises PluginError when NCCL_NET_PLUGIN (environment or nccl.conf) names a missing path.
    """
    requested, what = _requested(environ)
    check_paths(plugin_entries(requested), f"{what}={requested!r}")
    return requested, candidate_names(requested)
