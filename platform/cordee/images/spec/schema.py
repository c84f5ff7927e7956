"""The image spec schema (images/README.md documents every field): sections, defaults and the
rules that tie fields together. Pure: no files, no templates. String grammars: grammars.py.
"""

from __future__ import annotations

from cordee.images.spec.fields import REQUIRED, Bool, Choice, Invalid, List, Map, Optional, Str, Struct
from cordee.images.spec.grammars import (
    ABS_PATH,
    ANNOTATION_KEY,
    DEB_PACKAGE,
    ENV_NAME,
    GCC_SPEC,
    GIT_COMMIT,
    GIT_REF,
    HTTPS_URL,
    IMAGE_REF,
    LABEL_KEY,
    LINE,
    LITERAL,
    MOUNT,
    PIP_REQUIREMENT,
    REL_PATH,
    SHA256,
    SPACK_SPEC,
    SPACK_VARIANT,
    TEXT,
    VERSION,
)

# --- container specs ------------------------------------------------------------------------

# Components the Containerfile template knows how to build (recipes/containerfile/scripts/).
NETSTACK = ("cassini-headers", "cxi-driver", "libcxi", "libfabric", "aws-ofi-nccl")
COMPONENTS = (*NETSTACK, "nccl-tests")


def _source_check(entry: dict, path: str) -> None:
    tarball = entry["url"] is not None or entry["sha256"] is not None
    git = entry["git"] is not None or entry["commit"] is not None
    if tarball == git or (tarball and None in (entry["url"], entry["sha256"])):
        raise Invalid(
            path, "needs either url + sha256 (a release tarball) or git + commit", "one of the two pairs"
        )
    if git and None in (entry["git"], entry["commit"]):
        raise Invalid(path, "needs both git and commit", "git + commit")


SOURCE = Struct(
    {
        "version": (VERSION, REQUIRED),
        "url": (Optional(HTTPS_URL), None),
        "sha256": (Optional(SHA256), None),
        "git": (Optional(HTTPS_URL), None),
        "commit": (Optional(GIT_COMMIT), None),
        "checksum_source": (LINE, REQUIRED),
    },
    _source_check,
)
SOURCES = Map(Str("a component", choices=COMPONENTS), SOURCE)


def _base_check(base: dict, path: str) -> None:
    if (base["image"] is None) == (base["debootstrap"] is None):
        raise Invalid(path, "needs exactly one of image (a registry base) or debootstrap (built locally)")
    if base["debootstrap"] is not None and base["platform"] is not None:
        raise Invalid(f"{path}.platform", "a debootstrap base is built for the host's architecture", "null")
    if base["image"] is not None and base["platform"] is None:
        raise Invalid(f"{path}.platform", "is required with base.image", "linux/amd64, linux/arm64")


DEBOOTSTRAP = Struct(
    {
        "suite": (Str("a Debian suite", choices=("bookworm", "trixie")), REQUIRED),
        "variant": (Str("a debootstrap variant", choices=("minbase", "buildd")), "minbase"),
        "include": (List(DEB_PACKAGE), []),
    }
)
BASE = Struct(
    {
        "image": (Optional(IMAGE_REF), None),
        "platform": (Optional(Str("a platform", choices=("linux/amd64", "linux/arm64"))), None),
        "debootstrap": (Optional(DEBOOTSTRAP), None),
    },
    _base_check,
)


def _network_check(net: dict, path: str) -> None:
    if net["stack"] == "hook" and net["variant"] is None:
        raise Invalid(f"{path}.variant", "is required with stack: hook", "cuda12, cuda13, cuda-dl")
    if net["stack"] == "none" and net["variant"] is not None:  # builtin keeps it: one field switches
        raise Invalid(f"{path}.variant", "applies to stack: hook only", "null")
    if net["cxi_hook"] is None:
        net["cxi_hook"] = net["stack"] == "hook"
    elif net["cxi_hook"] and net["stack"] == "none":
        raise Invalid(f"{path}.cxi_hook", "needs a network stack (hook or builtin)", "false")


NETWORK = Struct(
    {
        "stack": (Str("a network stack", choices=("hook", "builtin", "none")), "none"),
        "variant": (
            Optional(Str("an aws_ofi_nccl hook variant", choices=("cuda12", "cuda13", "cuda-dl"))),
            None,
        ),
        "cxi_hook": (Optional(Bool()), None),
        "prefix": (ABS_PATH, "/opt/cordee-net"),
        "cuda_home": (ABS_PATH, "/usr/local/cuda"),
        "cuda_arch": (Str("a CUDA compute capability such as 90 or 90a", r"[0-9]{2,3}a?"), "90"),
    },
    _network_check,
)


def _python_check(py: dict, path: str) -> None:
    if py["index_url"] is not None and py["source"] != "index":
        raise Invalid(f"{path}.index_url", "applies to source: index only", "null")


PYTHON = Struct(
    {
        "venv": (Optional(ABS_PATH), None),
        "source": (Str("where pip gets requirements", choices=("wheelhouse", "index")), "wheelhouse"),
        "index_url": (Optional(HTTPS_URL), None),
        "requirements": (List(PIP_REQUIREMENT), []),
        "install_cordee": (Bool(), True),
    },
    _python_check,
)
EDF = Struct(
    {
        "workdir": (Optional(ABS_PATH), None),
        "writable": (Bool(), True),
        "entrypoint": (Bool(), False),
        "mounts": (List(MOUNT), []),
        "env": (Map(ENV_NAME, TEXT), {}),
        "annotations": (Map(ANNOTATION_KEY, TEXT), {}),
    }
)
_COMMON = {
    "kind": (Str("a spec kind", choices=("container", "uenv")), REQUIRED),
    "description": (LINE, REQUIRED),
    "fabric_profile": (Str("a fabric profile name"), REQUIRED),
    "env": (Map(ENV_NAME, LITERAL), {}),
}
CONTAINER = Struct(
    {
        **_COMMON,
        "base": (BASE, REQUIRED),
        "network": (NETWORK, {}),
        "sources_file": (Optional(REL_PATH), None),
        "sources": (SOURCES, {}),
        "apt_packages": (List(DEB_PACKAGE), []),
        "python": (PYTHON, {}),
        "labels": (Map(LABEL_KEY, TEXT), {}),
        "edf": (EDF, {}),
    }
)

# --- uenv specs (stackinator 4.0, recipe format v1) -----------------------------------------

MPI_IMPLEMENTATIONS = ("cray-mpich", "mpich", "mvapich2")  # stackinator 4.0 Recipe.valid_mpi_specs


def _package(spack_spec: str) -> str:
    """The package a (validated) Spack spec names: "py-torch@2.3 +cuda" -> "py-torch"."""
    return spack_spec.split("@")[0].split(" ")[0]


def _mpi_check(mpi: dict, path: str) -> None:
    if _package(mpi["spec"]) not in MPI_IMPLEMENTATIONS:
        raise Invalid(
            f"{path}.spec",
            f"{mpi['spec']!r} is not an MPI stackinator 4.0 knows",
            ", ".join(MPI_IMPLEMENTATIONS),
        )


UENV = Struct(
    {
        "store": (ABS_PATH, "/user-environment"),
        "spack": (
            Struct(
                {"repo": (HTTPS_URL, "https://github.com/spack/spack.git"), "commit": (GIT_REF, REQUIRED)}
            ),
            REQUIRED,
        ),
        "modules": (Bool(), True),
        "compilers": (Struct({"bootstrap": (GCC_SPEC, REQUIRED), "gcc": (GCC_SPEC, REQUIRED)}), REQUIRED),
        "mpi": (
            Optional(
                Struct(
                    {
                        "spec": (SPACK_SPEC, REQUIRED),
                        "gpu": (Optional(Str("a GPU kind", choices=("cuda", "rocm"))), None),
                    },
                    _mpi_check,
                )
            ),
            None,
        ),
        "environment": (
            Struct(
                {
                    "name": (
                        Str(
                            "an environment name [A-Za-z0-9_][A-Za-z0-9_-]*",
                            r"[A-Za-z0-9_][A-Za-z0-9_-]*",
                            max_len=64,
                        ),
                        REQUIRED,
                    ),
                    "unify": (Choice(True, False, "when_possible"), True),
                    "specs": (List(SPACK_SPEC, min_items=1), REQUIRED),
                    "variants": (List(SPACK_VARIANT), []),
                    "view": (Optional(Str("a view name [A-Za-z0-9_]+", r"[A-Za-z0-9_]+", max_len=64)), None),
                }
            ),
            REQUIRED,
        ),
    }
)
UENV_SPEC = Struct({**_COMMON, "uenv": (UENV, REQUIRED)})


def check_cross_fields(data: dict, profile_env: dict[str, str], profile: str) -> None:
    """Rules between sections (after each section is valid on its own)."""
    for key in data["env"]:
        if key in profile_env:
            raise Invalid(
                f"env.{key}",
                f"is set by fabric profile {profile!r} (the one source of these values)",
                "a variable the profile does not set, or another fabric_profile",
            )
    if data["kind"] == "uenv":
        for i, spec in enumerate(data["uenv"]["environment"]["specs"]):
            if _package(spec) == "py-cordee":
                raise Invalid(
                    f"uenv.environment.specs[{i}]", "py-cordee is added by cordee itself", "other specs"
                )
        # The variables become Spack modules.yaml `set` entries: Spack formats {tokens} in them
        # and its tcl modules quote values with braces.
        for key, value in [*profile_env.items(), *data["env"].items()]:
            if "{" in value or "}" in value:
                where = f"env.{key}" if key in data["env"] else "fabric_profile"
                raise Invalid(where, f"{key}={value!r} contains braces, which Spack modules cannot carry")
        return
    python, net = data["python"], data["network"]
    if python["venv"] is not None and "PATH" in data["env"]:
        raise Invalid("env.PATH", "is set from python.venv", "other variables")
    if python["requirements"] and python["source"] == "wheelhouse" and data["base"]["platform"] is not None:
        raise Invalid(
            "python.source",
            "wheelhouse requirements are downloaded by the host's pip, for the host's architecture; "
            "this base is for " + data["base"]["platform"],
            "index (pip inside the build), or a base without platform",
        )
    if net["stack"] == "builtin":
        missing = [c for c in NETSTACK if c not in data["sources"]]
        if missing:
            raise Invalid(
                "sources", f"network.stack builtin builds {', '.join(NETSTACK)}; missing {', '.join(missing)}"
            )
    for key in data["edf"]["env"]:
        if key in profile_env or key in data["env"]:
            raise Invalid(
                f"edf.env.{key}", "is already set by the fabric profile or by env", "another variable"
            )
    annotations = data["edf"]["annotations"]
    for key in annotations:
        if key.startswith(("com.hooks.aws_ofi_nccl.", "com.hooks.cxi.")):
            raise Invalid(
                f"edf.annotations.{key}", "is set from network.stack/variant/cxi_hook", "other annotations"
            )
        for other in annotations:
            if other.startswith(key + "."):
                raise Invalid(
                    f"edf.annotations.{key}", f"is also a table in {other!r} (TOML cannot hold both)"
                )
    _check_edf_rules(data["edf"])
    for key in data["labels"]:
        if key.startswith("org.cordee.") or key in (
            "org.opencontainers.image.title",
            "org.opencontainers.image.description",
        ):
            raise Invalid(f"labels.{key}", "is set by cordee", "other label keys")


def _check_edf_rules(edf: dict) -> None:
    """What `cordee edf check` refuses in the rendered EDF, refused here by its own rules (annotation
    values, hooks that need a writable container). A value holding ${VAR} is CE's to expand: the
    check of the installed EDF sees the result."""
    from cordee.edf.fields import check_annotation, check_merged

    for key, value in edf["annotations"].items():
        if "$" not in value:
            for severity, message in check_annotation(key, value):
                if severity == "error":
                    raise Invalid(f"edf.annotations.{key}", message)
    for field, severity, message in check_merged("", edf["writable"], edf["env"], edf["annotations"]):
        if severity == "error":
            raise Invalid(f"edf.{field}", message)
