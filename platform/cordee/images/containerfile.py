"""What a container spec's Containerfile is made of: the base, the pinned sources to build, the
Python install commands, the labels; and its part of the build plan (images/README.md).
"""

from __future__ import annotations

import hashlib

from cordee import __version__
from cordee.images.spec import ImageSpec, canonical_json
from cordee.images.spec.schema import COMPONENTS, NETSTACK
from cordee.images.templating import header, literal_env, recipes_dir, render_template

CONTAINERFILE = "containerfile/Containerfile.j2"
SCRIPTS = "containerfile/scripts"
SRC_DIR = "/tmp/cordee-src"
WHEELS_DIR = "/tmp/cordee-wheels"


def base_plan(base: dict) -> dict:
    if base["image"] is not None:
        return {"kind": "registry", "ref": base["image"], "platform": base["platform"]}
    boot = base["debootstrap"]
    core = {
        "kind": "debootstrap",
        "suite": boot["suite"],
        "variant": boot["variant"],
        "include": sorted(boot["include"]),
    }
    digest = hashlib.sha256(canonical_json(core)).hexdigest()[:12]
    return {**core, "tag": f"localhost/cordee/base-{boot['suite']}:{digest}"}


def built_sources(data: dict) -> list[dict]:
    """The pinned sources this image builds, in build order: the network stack only with
    network.stack builtin (kept in the spec otherwise, so one field switches it), nccl-tests always."""
    out = []
    for component in COMPONENTS:
        source = data["sources"].get(component)
        if source is None or (component in NETSTACK and data["network"]["stack"] != "builtin"):
            continue
        target = f"{SRC_DIR}/{component}"
        if source["url"] is not None:
            fetch = ["sh", "/tmp/cordee-build/fetch-tarball.sh", target, source["url"], source["sha256"]]
        else:
            fetch = ["sh", "/tmp/cordee-build/fetch-git.sh", target, source["git"], source["commit"]]
        out.append({**source, "component": component, "dir": target, "fetch": fetch})
    return out


def python_commands(data: dict) -> tuple[list[list[str]], dict | None]:
    """RUN commands that install the Python requirements and cordee, and the wheelhouse plan."""
    py = data["python"]
    from_wheels = py["requirements"] if py["source"] == "wheelhouse" else []
    local = [*from_wheels, *([f"cordee=={__version__}"] if py["install_cordee"] else [])]
    wheelhouse = {"requirements": from_wheels, "cordee": py["install_cordee"]} if local else None
    commands: list[list[str]] = []
    if py["venv"] is not None:
        commands.append(["python3", "-m", "venv", py["venv"]])
        pip = [f"{py['venv']}/bin/python", "-m", "pip"]
    else:  # the base's own Python (e.g. NGC's, which has torch): Debian marks it externally managed
        pip = ["env", "PIP_BREAK_SYSTEM_PACKAGES=1", "python3", "-m", "pip"]
    install = [*pip, "install", "--no-cache-dir", "--disable-pip-version-check"]
    if py["source"] == "index" and py["requirements"]:
        index = ["--index-url", py["index_url"]] if py["index_url"] else []
        commands.append([*install, *index, *py["requirements"]])
    if local:
        commands.append([*install, "--no-index", "--find-links", WHEELS_DIR, *local])
        commands.append(["rm", "-rf", WHEELS_DIR])
    if py["install_cordee"]:  # the image is useless if the CLI does not start: fail the build here
        commands.append([f"{py['venv']}/bin/cordee" if py["venv"] else "cordee", "--version"])
    return commands, wheelhouse


def labels(spec: ImageSpec, sources: list[dict], content_key: str) -> list[tuple[str, str]]:
    data, net = spec.data, spec.data["network"]
    labels = {
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.description": data["description"],
        "org.cordee.version": __version__,
        "org.cordee.spec-hash": spec.spec_hash,
        "org.cordee.content-key": content_key,
        "org.cordee.fabric-profile": data["fabric_profile"],
        "org.cordee.network": net["stack"] + (f" ({net['variant']})" if net["stack"] == "hook" else ""),
    }
    for s in sources:
        pin = f"{s['url']} sha256:{s['sha256']}" if s["url"] else f"{s['git']} commit:{s['commit']}"
        labels[f"org.cordee.source.{s['component']}"] = (
            f"{s['version']} {pin} (pin from {s['checksum_source']})"
        )
    labels.update(data["labels"])
    return sorted(labels.items())


def cudart_dir(data: dict) -> str | None:
    """Where the unversioned libcudart.so must exist: the CE hook's cuda-dl variant loads it."""
    net = data["network"]
    return f"{net['cuda_home']}/lib64" if net["stack"] == "hook" and net["variant"] == "cuda-dl" else None


def uses_scripts(data: dict) -> bool:
    """Whether the Containerfile runs recipes/containerfile/scripts (copied into the build folder)."""
    return bool(built_sources(data)) or cudart_dir(data) is not None


def container_files(spec: ImageSpec, key: str) -> tuple[dict[str, bytes], dict]:
    """Containerfile and scripts (path -> bytes), and this spec's part of the build plan."""
    data = spec.data
    sources = built_sources(data)
    commands, wheelhouse = python_commands(data)
    base = base_plan(data["base"])
    net = data["network"]
    path_prepend = [f"{data['python']['venv']}/bin"] if data["python"]["venv"] else []
    if any(s["component"] == "nccl-tests" for s in sources):
        path_prepend.append(f"{net['prefix']}/bin")
    context = {
        **header(spec),
        "base_ref": base.get("tag") or base["ref"],
        "apt_packages": data["apt_packages"],
        "builtin_netstack": net["stack"] == "builtin",
        "sources": sources,
        "prefix": net["prefix"],
        "cuda_home": net["cuda_home"],
        "cuda_arch": net["cuda_arch"],
        "cudart_dir": cudart_dir(data),
        "wheelhouse": wheelhouse is not None,
        "python_commands": commands,
        "path_prepend": path_prepend,
        "fabric_profile": data["fabric_profile"],
        "env": literal_env(spec),
        "labels": labels(spec, sources, key),
    }
    files = {
        "Containerfile": render_template(spec, CONTAINERFILE, context).encode(),
    }
    if uses_scripts(data):
        for script in sorted((recipes_dir(spec) / SCRIPTS).glob("*.sh")):
            files[f"scripts/{script.name}"] = script.read_bytes()
    build_network = bool(sources or data["apt_packages"]) or (
        data["python"]["source"] == "index" and bool(data["python"]["requirements"])
    )
    plan = {
        "base": base,
        "wheelhouse": wheelhouse,
        "platform": data["base"]["platform"],
        "build_network": build_network,
        "edf": f"{spec.name}.toml",
        "tag": f"localhost/cordee/{spec.name}:{key[:12]}",
    }
    return files, plan
