"""Injection is impossible: arbitrary strings (quotes, $(...), backticks, newlines, ;, backslashes,
unicode) go into every spec field that reaches a template. Each case is either rejected with a
SpecError naming that field, or renders to files whose parsed contents are exactly those of the
same spec rendered with a harmless placeholder, with the placeholder replaced by the value:
Containerfile instruction by instruction (dockerfile-parse; RUN lines word by word with shlex),
EDF (tomllib), build plan (json), uenv recipe (yaml). Plus one real podman build of the quoting.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cordee.edf.layer import flatten
from cordee.images.quoting import edf_literal
from cordee.images.render import render_image
from cordee.images.spec import SpecError, grammars, load_spec

REPO = Path(__file__).resolve().parents[1]
NASTY = [
    "'", '"', "$(id)", "`id`", "${HOME}", "$HOME", "$${X}", "${X:-y}", "; rm -rf /", "&&", "|", "\\", "\\'",
    '\\"', "\n", "\r\n", "\x00", "\t", "\x7f", "\x85", "\u2028", "\u202e", "\ufeff", "#", "<<EOF", " ", "=",
    ":", ",", "[", "]", "{", "}", "..", "/", "é", "😀", "--", "-rf", "*", "?", "%s", "\\n",
]  # fmt: skip


class Field:
    """One spec field: where it is (a setter on the spec's YAML data), a placeholder valid for it,
    the field path its errors name, the grammar it must match (None: free text)."""

    def __init__(self, spec, where, placeholder, error, pattern=None, literal=False, exact=False):
        self.spec, self.where, self.placeholder, self.error = spec, where, placeholder, error
        self.pattern, self.literal, self.exact = pattern, literal, exact

    def data(self, value):
        data = yaml.safe_load((REPO / "images" / f"{self.spec}.yaml").read_text())
        self.where(data, value)
        return data


def at(*keys, key=False, wrap=lambda v: v):
    """Setter for data[k1][k2]...: the value (or, with key=True, a mapping key) goes there."""

    def setter(data, value):
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = {value: "x"} if key else wrap(value)

    return setter


def source(component, field):
    def setter(data, value):
        entry = yaml.safe_load((REPO / "images/sources/slingshot-shs-13.1.0.yaml").read_text())[component]
        entry[field] = value
        data.setdefault("sources", {})[component] = entry

    return setter


P = "cordeeplaceholderqzx"
CPU, NGC, CUDA, UENV = "cpu-ci", "pytorch-ngc-gh200", "pytorch-cuda-gh200", "pytorch-uenv-gh200"
g = grammars
FIELDS = {
    "description": Field(CPU, at("description"), P, "description"),
    "env value": Field(CPU, at("env", "CORDEE_PROBE"), P, "env.CORDEE_PROBE", literal=True),
    "env name": Field(CPU, at("env", key=True), "CORDEE_" + P, "env.", g.ENV_NAME.pattern),
    "label value": Field(CPU, at("labels", "org.example.probe"), P, "labels.org.example.probe"),
    "label key": Field(CPU, at("labels", key=True), "org.example." + P, "labels.", g.LABEL_KEY.pattern),
    "edf env value": Field(CPU, at("edf", "env", "CORDEE_PROBE"), P, "edf.env.CORDEE_PROBE"),
    "edf mount": Field(
        CPU,
        at("edf", "mounts", wrap=lambda v: ["/data", v]),
        "/" + P,
        "edf.mounts[1]",
        r"(?:/|\$\{)[^:\n]{0,20}(?::/[^:\n]{0,20}(?::[a-z0-9]{1,4}(?:\+[a-z0-9]{1,4})?)?)?",
    ),
    "edf workdir": Field(CPU, at("edf", "workdir"), "/" + P, "edf.workdir", g.ABS_PATH.pattern),
    "annotation value": Field(CPU, at("edf", "annotations", "com.example.probe"), P, "edf.annotations."),
    "annotation key": Field(
        CPU,
        at("edf", "annotations", key=True),
        "com.example." + P,
        "edf.annotations",
        g.ANNOTATION_KEY.pattern,
    ),
    "base image": Field(
        NGC, at("base", "image"), f"registry.example/{P}:1", "base.image", g.BASE_IMAGE_REF.pattern
    ),
    "debootstrap package": Field(
        CPU,
        at("base", "debootstrap", "include", wrap=lambda v: ["python3", "python3-venv", v]),
        P,
        "base.debootstrap.include[2]",
        g.DEB_PACKAGE.pattern,
    ),
    "apt package": Field(
        CUDA, at("apt_packages", wrap=lambda v: ["python3", v]), P, "apt_packages[1]", g.DEB_PACKAGE.pattern
    ),
    "venv": Field(CPU, at("python", "venv"), "/opt/" + P, "python.venv", g.ABS_PATH.pattern),
    "requirement": Field(
        CPU,
        at("python", "requirements", wrap=lambda v: [v]),
        P + "==1.0",
        "python.requirements[0]",
        g.PIP_REQUIREMENT.pattern,
    ),
    "index url": Field(
        CUDA, at("python", "index_url"), f"https://{P}.example/whl", "python.index_url", g.HTTPS_URL.pattern
    ),
    "source url": Field(
        CUDA,
        source("libfabric", "url"),
        f"https://{P}.example/l.tar.bz2",
        "sources.libfabric.url",
        g.HTTPS_URL.pattern,
    ),
    "source sha256": Field(
        CUDA, source("libfabric", "sha256"), "cafe" * 16, "sources.libfabric.sha256", g.SHA256.pattern
    ),
    "source git": Field(
        CUDA, source("libcxi", "git"), f"https://{P}.example/r.git", "sources.libcxi.git", g.HTTPS_URL.pattern
    ),
    "source commit": Field(
        CUDA, source("libcxi", "commit"), "deadbeefcafe0123", "sources.libcxi.commit", g.GIT_COMMIT.pattern
    ),
    "source version": Field(
        CUDA,
        source("nccl-tests", "version"),
        "97.86.75-" + P,
        "sources.nccl-tests.version",
        g.VERSION.pattern,
    ),
    "checksum source": Field(
        CUDA, source("nccl-tests", "checksum_source"), P, "sources.nccl-tests.checksum_source"
    ),
    "network prefix": Field(CUDA, at("network", "prefix"), "/opt/" + P, "network.prefix", g.ABS_PATH.pattern),
    "cuda home": Field(NGC, at("network", "cuda_home"), "/opt/" + P, "network.cuda_home", g.ABS_PATH.pattern),
    "cuda arch": Field(
        CUDA, at("network", "cuda_arch"), "987a", "network.cuda_arch", r"[0-9]{2,3}a?", exact=True
    ),
    "uenv description": Field(UENV, at("description"), P, "description"),
    "uenv env value": Field(UENV, at("env", "CORDEE_PROBE"), P, "env.CORDEE_PROBE", literal=True),
    "uenv spack repo": Field(
        UENV,
        at("uenv", "spack", "repo"),
        f"https://{P}.example/spack.git",
        "uenv.spack.repo",
        g.HTTPS_URL.pattern,
    ),
    "uenv spack commit": Field(
        UENV, at("uenv", "spack", "commit"), P, "uenv.spack.commit", g.GIT_REF.pattern
    ),
    "uenv store": Field(UENV, at("uenv", "store"), "/" + P, "uenv.store", g.ABS_PATH.pattern),
    "uenv spec": Field(
        UENV,
        at("uenv", "environment", "specs", wrap=lambda v: ["nccl", v]),
        P,
        "uenv.environment.specs[1]",
        g.SPACK_SPEC.pattern,
    ),
    "uenv variant": Field(
        UENV,
        at("uenv", "environment", "variants", wrap=lambda v: [v]),
        "+" + P,
        "uenv.environment.variants[0]",
        g.SPACK_VARIANT.pattern,
    ),
    "uenv environment name": Field(
        UENV, at("uenv", "environment", "name"), P, "uenv.environment.name", r"[A-Za-z0-9_][A-Za-z0-9_-]*"
    ),
    "uenv view": Field(UENV, at("uenv", "environment", "view"), P, "uenv.environment.view", r"[A-Za-z0-9_]+"),
    "uenv mpi": Field(
        UENV,
        at("uenv", "mpi", "spec"),
        "cray-mpich@" + P,
        "uenv.mpi.spec",
        r"(?:cray-mpich|mpich|mvapich2)(?:@[0-9a-z.:]{1,9})?(?: [+~][a-z_]{1,8}| [a-z_]{1,8}=[a-z0-9,]{1,8})*",  # noqa: E501
    ),
}


def values(field: Field):
    nasty = st.lists(st.sampled_from(NASTY), min_size=1, max_size=5).map("".join)
    options = [st.text(max_size=30), nasty, nasty.map(lambda s: "x" + s)]
    if field.pattern:  # values of the field's own grammar: these must render, and exactly
        options = [st.from_regex(field.pattern, fullmatch=True), *options]
    return st.one_of(options)


# --- what a rendered folder says, parsed by each format's own parser ----------------------------


def containerfile(text: str) -> list:
    """Instructions in order; LABELs (sorted by key when rendered) merged into one mapping."""
    out, labels = [], {}
    for ins in DockerfileParser(fileobj=io.BytesIO(text.encode())).structure:
        kind, value = ins["instruction"], ins["value"]
        if kind == "COMMENT":
            continue
        if kind == "RUN":
            out.append((kind, shlex.split(value)))
        elif kind in ("ENV", "LABEL"):  # this one instruction's pairs, as the parser reads them
            parsed = DockerfileParser(fileobj=io.BytesIO(f"FROM scratch\n{ins['content']}".encode()))
            if kind == "ENV":
                out.append((kind, parsed.envs))
            else:
                labels.update(parsed.labels)
        else:
            out.append((kind, value))
    return [*out, ("LABEL", labels)]


def parse_folder(out: Path, normalize: dict[str, str]) -> dict:
    parsed = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel, text = path.relative_to(out).as_posix(), path.read_bytes()
        for old, new in normalize.items():  # hashes of the spec differ between the two renders
            text = text.replace(old.encode(), new.encode())
        if rel == "Containerfile":
            parsed[rel] = containerfile(text.decode())
        elif rel.endswith(".toml"):  # dotted keys (annotations) compared as the flat names CE reads
            parsed[rel] = dict(flatten(tomllib.loads(text.decode())))
        elif rel == "build.json" or rel.endswith("source.json"):
            parsed[rel] = json.loads(text)
        elif rel.endswith(".yaml"):
            parsed[rel] = yaml.safe_load(text)
        else:
            parsed[rel] = text
    return parsed


def strings(obj) -> set[str]:
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(strings(k) | strings(v) for k, v in obj.items())) if obj else set()
    if isinstance(obj, list | tuple):
        return set().union(*(strings(x) for x in obj)) if obj else set()
    return set()


def substitute(obj, old: str, new: str, exact: bool):
    if isinstance(obj, str):
        return (new if obj == old else obj) if exact else obj.replace(old, new)
    if isinstance(obj, dict):
        return {substitute(k, old, new, exact): substitute(v, old, new, exact) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(substitute(x, old, new, exact) for x in obj)
    return obj


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("injection")
    shutil.copytree(REPO / "images", root / "images")
    shutil.copytree(REPO / "recipes", root / "recipes")
    return root


_PLACEHOLDER_RENDERS: dict[str, tuple] = {}


def render(root: Path, field: Field, value: str, out: str):
    (root / "images" / "probe.yaml").write_text(yaml.safe_dump(field.data(value), allow_unicode=True))
    spec = load_spec("probe", root)
    shutil.rmtree(root / out, ignore_errors=True)
    rendered = render_image(spec, root / out, sqsh_path=Path("/images/probe.sqsh"))
    return rendered


def placeholder_render(root: Path, name: str) -> tuple:
    if name not in _PLACEHOLDER_RENDERS:
        field = FIELDS[name]
        rendered = render(root, field, field.placeholder, f"placeholder-{name.replace(' ', '-')}")
        _PLACEHOLDER_RENDERS[name] = (rendered, parse_folder(rendered.out_dir, {}))
    return _PLACEHOLDER_RENDERS[name]


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_placeholders_are_valid_and_reach_the_output(root: Path, name: str):
    rendered, parsed = placeholder_render(root, name)
    assert FIELDS[name].placeholder in json.dumps(parsed, default=repr, ensure_ascii=False)


def check_value(root: Path, name: str, value: str) -> str:
    """'rejected' (with an error naming the field), 'rendered' (exactly), or 'skipped'."""
    field = FIELDS[name]
    if yaml.safe_load(yaml.safe_dump({"v": value}, allow_unicode=True))["v"] != value:
        return "skipped"  # not representable in a YAML spec at all (e.g. a lone \r is read back as \n)
    reference, expected_files = placeholder_render(root, name)
    if value in strings(expected_files) or field.placeholder in value:
        return "skipped"  # already in the output elsewhere (e.g. a package the recipe installs anyway)
    try:
        rendered = render(root, field, value, "probe-out")
    except SpecError as e:
        message = str(e)
        assert f"field {field.error}" in message.replace("'", "").replace('"', ""), message
        assert "\n" not in message, message
        return "rejected"
    normalize = {rendered.content_key: reference.content_key, rendered.spec_hash: reference.spec_hash,
                 rendered.content_key[:12]: reference.content_key[:12]}  # fmt: skip
    if (rendered.plan["base"] or {}).get("kind") == "debootstrap":  # its tag hashes the package list
        normalize[rendered.plan["base"]["tag"]] = reference.plan["base"]["tag"]
    got = parse_folder(rendered.out_dir, normalize)
    assert sorted(got) == sorted(expected_files)
    for rel, expected in expected_files.items():
        new = edf_literal(value) if field.literal and rel.endswith(".toml") else value
        expected = substitute(expected, field.placeholder, new, field.exact)
        if rel == "build.json" and expected["base"] and "include" in expected["base"]:
            expected["base"]["include"].sort()  # the plan lists packages sorted
        assert got[rel] == expected, rel
    if (reference.out_dir / "Containerfile").exists():  # the same instructions, line for line
        assert sorted(first_words(rendered.out_dir / "Containerfile")) == sorted(
            first_words(reference.out_dir / "Containerfile")
        )
    return "rendered"


@pytest.mark.parametrize("name", sorted(FIELDS))
@settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_value_is_rejected_or_rendered_exactly(root: Path, name: str, data):
    event(check_value(root, name, data.draw(values(FIELDS[name]), label="value")))


TRICKY = "it's \"quoted\" $(id) `id` ${HOME} $HOME ; && | \\ \\' é 😀 # <<EOF"
VALID = {
    "env name": "Z_9",
    "label key": "io.example.k-1",
    "edf mount": "${SCRATCH}/d e.sqsh:/data:sqsh",
    "edf workdir": "/work/a_b",
    "annotation key": "com.example.ssh.enabled",
    "base image": "localhost:5000/a/b@sha256:" + "0" * 64,
    "debootstrap package": "libc6-dev",
    "apt package": "g++",
    "venv": "/opt/v+1",
    "requirement": "nvidia-ml-py[x,y]==12.535.133+local",
    "index url": "https://h.example:8443/a%20b/c?x=1&y=2",
    "source url": "https://h.example/v1.0/x.tar.gz",
    "source sha256": "0" * 64,
    "source git": "https://h.example/r.git",
    "source commit": "0123456789abcdef0123",
    "source version": "1.2.3-rc1",
    "network prefix": "/x/y",
    "cuda home": "/usr/local/cuda-12.8",
    "cuda arch": "100a",
    "uenv env value": TRICKY.replace("${HOME}", "$HOME"),  # Spack modules take no braces
    "uenv spack repo": "https://h.example/spack.git",
    "uenv spack commit": "releases/v0.21",
    "uenv store": "/user-tools",
    "uenv spec": "py-numpy@1.26: +blas ^openblas %gcc@13",
    "uenv variant": "cuda_arch=90a",
    "uenv environment name": "ml-env_2",
    "uenv view": "ml_view",
    "uenv mpi": "mpich@4.1 +cuda",
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_a_valid_value_renders_exactly(root: Path, name: str):
    """Each field has at least one accepted value, rendered and checked (not left to chance)."""
    assert check_value(root, name, VALID.get(name, TRICKY)) == "rendered"


def first_words(path: Path) -> list[str]:
    return [line.split(" ", 1)[0] for line in path.read_text().splitlines()]


def test_podman_reads_env_and_label_values_exactly(tmp_path: Path):
    """buildah's own parser, not just dockerfile-parse: ENV and LABEL lines of a rendered
    Containerfile, built on `scratch` (no base image, no container run), then inspected."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    tricky = {
        "CORDEE_Q1": "it's \"quoted\" $HOME ${HOME} $(id) `id` ; && | \\ \\' é 😀 # <<EOF",
        "CORDEE_Q2": "$",
        "CORDEE_Q3": "\\",
        "CORDEE_Q4": "'",
        "CORDEE_Q5": "  spaces  ",
    }
    root = tmp_path / "root"
    shutil.copytree(REPO / "images", root / "images")
    shutil.copytree(REPO / "recipes", root / "recipes")
    data = yaml.safe_load((REPO / "images/cpu-ci.yaml").read_text())
    data["env"] = tricky
    data["labels"] = {f"org.example.q{i}": v for i, v in enumerate([*tricky.values(), ""])}
    (root / "images/probe.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    render_image(load_spec("probe", root), tmp_path / "out")
    lines = (tmp_path / "out/Containerfile").read_text().splitlines()
    keep = [ln for ln in lines if ln.startswith(("ENV CORDEE_", "LABEL org.example."))]
    assert len(keep) == 2 * len(tricky) + 1
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/Containerfile").write_text("FROM scratch\n" + "\n".join(keep) + "\n")
    tag = "localhost/cordee-test/quoting:latest"
    build = subprocess.run(["podman", "build", "-q", "-t", tag, str(tmp_path / "ctx")], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert build.returncode == 0, build.stderr  # podman is installed: a build that fails is a failure
    try:
        out = subprocess.run(["podman", "image", "inspect", tag, "--format", "{{json .Config}}"], check=True,
                             capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=60)
    config = json.loads(out)
    env = dict(e.split("=", 1) for e in config["Env"])
    assert {k: env[k] for k in tricky} == tricky
    assert {k: v for k, v in config["Labels"].items() if k.startswith("org.example.")} == data["labels"]
