"""Rules between the sections of a spec, run once every field is valid on its own: the fabric
profile's variables against `env`, the python, network and sources sections against each other, and
what `cordee edf check` would refuse in the rendered EDF. Every broken rule is reported, not the first.
"""

from __future__ import annotations

from cordee.edf.fields import check_annotation, check_merged
from cordee.images.spec.fields import Collector
from cordee.images.spec.schema import NETSTACK, package_name

_RESERVED_LABELS = ("org.opencontainers.image.title", "org.opencontainers.image.description")


def check_cross_fields(data: dict, profile_env: dict[str, str], profile: str) -> None:
    """Raise Invalid with every broken rule between sections of a (field by field valid) spec."""
    errors = Collector()
    for key in data["env"]:
        if key in profile_env:
            errors.add(
                f"env.{key}",
                f"is set by fabric profile {profile!r} (the one source of these values)",
                "a variable the profile does not set, or another fabric_profile",
            )
    if data["kind"] == "uenv":
        _uenv_rules(data, profile_env, errors)
    else:
        _container_rules(data, profile_env, errors)
    errors.raise_if_any()


def _uenv_rules(data: dict, profile_env: dict[str, str], errors: Collector) -> None:
    for i, spec in enumerate(data["uenv"]["environment"]["specs"]):
        if package_name(spec) == "py-cordee":
            errors.add(f"uenv.environment.specs[{i}]", "py-cordee is added by cordee itself", "other specs")
    # The variables become Spack modules.yaml `set` entries: Spack formats {tokens} in them
    # and its tcl modules quote values with braces.
    for key, value in [*profile_env.items(), *data["env"].items()]:
        if "{" in value or "}" in value:
            where = f"env.{key}" if key in data["env"] else "fabric_profile"
            errors.add(where, f"{key}={value!r} contains braces, which Spack modules cannot carry")


def _container_rules(data: dict, profile_env: dict[str, str], errors: Collector) -> None:
    python, net = data["python"], data["network"]
    if python["venv"] is not None and "PATH" in data["env"]:
        errors.add("env.PATH", "is set from python.venv", "other variables")
    if python["requirements"] and python["source"] == "wheelhouse" and data["base"]["platform"] is not None:
        errors.add(
            "python.source",
            "wheelhouse requirements are downloaded by the host's pip, for the host's architecture; "
            "this base is for " + data["base"]["platform"],
            "index (pip inside the build), or a base without platform",
        )
    if net["stack"] == "builtin":
        missing = [c for c in NETSTACK if c not in data["sources"]]
        if missing:
            errors.add(
                "sources", f"network.stack builtin builds {', '.join(NETSTACK)}; missing {', '.join(missing)}"
            )
    for key in data["edf"]["env"]:
        if key in profile_env or key in data["env"]:
            errors.add(f"edf.env.{key}", "is already set by the fabric profile or by env", "another variable")
    annotations = data["edf"]["annotations"]
    for key in annotations:
        if key.startswith(("com.hooks.aws_ofi_nccl.", "com.hooks.cxi.")):
            errors.add(
                f"edf.annotations.{key}", "is set from network.stack/variant/cxi_hook", "other annotations"
            )
        clash = next((other for other in annotations if other.startswith(key + ".")), None)
        if clash is not None:
            errors.add(f"edf.annotations.{key}", f"is also a table in {clash!r} (TOML cannot hold both)")
    _edf_check_rules(data["edf"], errors)
    for key in data["labels"]:
        if key.startswith("org.cordee.") or key in _RESERVED_LABELS:
            errors.add(f"labels.{key}", "is set by cordee", "other label keys")


def _edf_check_rules(edf: dict, errors: Collector) -> None:
    """What `cordee edf check` refuses in the rendered EDF, refused here by its own rules (annotation
    values, hooks that need a writable container). A value holding ${VAR} is CE's to expand: the
    check of the installed EDF sees the result."""
    for key, value in edf["annotations"].items():
        if "$" not in value:
            for severity, message in check_annotation(key, value):
                if severity == "error":
                    errors.add(f"edf.annotations.{key}", message)
    for field, severity, message in check_merged("", edf["writable"], edf["env"], edf["annotations"]):
        if severity == "error":
            errors.add(f"edf.{field}", message)
