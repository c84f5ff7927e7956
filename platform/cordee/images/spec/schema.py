"""The image spec schema (images/README.md documents every field, tests/test_image_readme.py keeps
the two in step): sections, defaults and the rules that tie the fields of one section together.
Pure: no files, no templates. String grammars: grammars.py; rules between sections: rules.py.
"""

from __future__ import annotations

from cordee.images.spec.fields import (
    REQUIRED,
    Bool,
    Choice,
    Collector,
    Invalid,
    List,
    Map,
    Optional,
    Str,
    Struct,
)
from cordee.images.spec.grammars import (
    ABS_PATH,
    ANNOTATION_KEY,
    BASE_IMAGE_REF,
    DEB_PACKAGE,
    EDF_TEXT,
    ENV_NAME,
    GCC_SPEC,
    GIT_COMMIT,
    GIT_REF,
    HTTPS_URL,
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
    doc="source",
)
SOURCES = Map(Str("a component", choices=COMPONENTS, doc="component"), SOURCE)


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
        "image": (Optional(BASE_IMAGE_REF), None),
        "platform": (Optional(Str("a platform", choices=("linux/amd64", "linux/arm64"))), None),
        "debootstrap": (Optional(DEBOOTSTRAP), None),
    },
    _base_check,
)


def _network_check(net: dict, path: str) -> None:
    errors = Collector()
    if net["stack"] == "hook" and net["variant"] is None:
        errors.add(f"{path}.variant", "is required with stack: hook", "cuda12, cuda13, cuda-dl")
    if net["stack"] == "none" and net["variant"] is not None:  # builtin keeps it: one field switches
        errors.add(f"{path}.variant", "applies to stack: hook only", "null")
    if net["cxi_hook"] is None:
        net["cxi_hook"] = net["stack"] == "hook"
    elif net["cxi_hook"] and net["stack"] == "none":
        errors.add(f"{path}.cxi_hook", "needs a network stack (hook or builtin)", "false")
    errors.raise_if_any()


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
        "cuda_arch": (
            Str("a CUDA compute capability such as 90 or 90a", r"[0-9]{2,3}a?", doc="`NN[N][a]`"),
            "90",
        ),
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
        "env": (Map(ENV_NAME, EDF_TEXT), {}),
        "annotations": (Map(ANNOTATION_KEY, EDF_TEXT), {}),
    }
)
COMMON = {
    "kind": (Str("a spec kind", choices=("container", "uenv")), REQUIRED),
    "description": (LINE, REQUIRED),
    "fabric_profile": (Str("a fabric profile name", doc="profile name"), REQUIRED),
    "env": (Map(ENV_NAME, LITERAL), {}),
}
CONTAINER = Struct(
    {
        **COMMON,
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


def package_name(spack_spec: str) -> str:
    """The package a (validated) Spack spec names: "py-torch@2.3 +cuda" -> "py-torch"."""
    return spack_spec.split("@")[0].split(" ")[0]


def _mpi_check(mpi: dict, path: str) -> None:
    if package_name(mpi["spec"]) not in MPI_IMPLEMENTATIONS:
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
                            doc="`[A-Za-z0-9_][A-Za-z0-9_-]*`",
                        ),
                        REQUIRED,
                    ),
                    "unify": (Choice(True, False, "when_possible"), True),
                    "specs": (List(SPACK_SPEC, min_items=1), REQUIRED),
                    "variants": (List(SPACK_VARIANT), []),
                    "view": (
                        Optional(
                            Str(
                                "a view name [A-Za-z0-9_]+",
                                r"[A-Za-z0-9_]+",
                                max_len=64,
                                doc="`[A-Za-z0-9_]+`",
                            )
                        ),
                        None,
                    ),
                }
            ),
            REQUIRED,
        ),
    }
)
UENV_SPEC = Struct({**COMMON, "uenv": (UENV, REQUIRED)})
