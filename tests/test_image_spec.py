"""Image specs: the shipped ones validate, lookup rules, hashing, every kind of bad spec is a
SpecError naming the file, the field and what is allowed, and one run reports every independent
error of a spec (also through `cordee image validate`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cordee import profiles
from cordee.errors import InputError
from cordee.images.spec import SpecError, canonical_json, find_root, grammars, list_specs, load_spec

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["cpu-ci", "pytorch-cuda-gh200", "pytorch-ngc-gh200", "pytorch-uenv-gh200"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout-like folder: a copy of images/ (specs and sources) and recipes/."""
    shutil.copytree(REPO / "images", tmp_path / "images")
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return tmp_path


def spec_data(name: str) -> dict:
    return yaml.safe_load((REPO / "images" / f"{name}.yaml").read_text())


def write_spec(root: Path, name: str, data: dict | str | bytes) -> Path:
    path = root / "images" / f"{name}.yaml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_shipped_specs_validate_and_are_listed():
    assert set(SHIPPED) <= set(list_specs(REPO))
    for name in SHIPPED:
        spec = load_spec(name, REPO)
        assert spec.name == name and spec.path == REPO / "images" / f"{name}.yaml"
        assert spec.kind == ("uenv" if "uenv" in name else "container")
        assert spec.spec_hash == hashlib.sha256(canonical_json(spec.data)).hexdigest()


def test_defaults_are_filled_and_sources_file_merged():
    cpu = load_spec("cpu-ci", REPO).data
    assert cpu["network"] == {
        "stack": "none",
        "variant": None,
        "cxi_hook": False,
        "prefix": "/opt/cordee-net",
        "cuda_home": "/usr/local/cuda",
        "cuda_arch": "90",
    }
    assert cpu["edf"] == {
        "workdir": None,
        "writable": True,
        "entrypoint": False,
        "mounts": [],
        "env": {},
        "annotations": {},
    }
    assert cpu["python"]["install_cordee"] is True and cpu["sources"] == {}
    ngc = load_spec("pytorch-ngc-gh200", REPO).data
    from_file = yaml.safe_load((REPO / "images/sources/slingshot-shs-13.1.0.yaml").read_text())
    assert set(ngc["sources"]) == set(from_file)
    assert ngc["sources"]["libfabric"]["sha256"] == from_file["libfabric"]["sha256"]
    assert ngc["network"]["cxi_hook"] is True  # default for stack hook


def test_every_source_records_where_its_pin_comes_from():
    for name, entry in load_spec("pytorch-cuda-gh200", REPO).data["sources"].items():
        assert entry["checksum_source"].strip(), name
        assert (entry["sha256"] and entry["url"]) or (entry["commit"] and entry["git"]), name


def test_lookup_by_path_and_by_name(root: Path):
    by_name = load_spec("cpu-ci", root)
    by_path = load_spec(str(root / "images" / "cpu-ci.yaml"))
    assert by_name.spec_hash == by_path.spec_hash == load_spec("cpu-ci", REPO).spec_hash
    with pytest.raises(SpecError, match=r"unknown image spec 'nope'.*known specs: .*cpu-ci"):
        load_spec("nope", root)


def test_hash_follows_content(root: Path):
    base = load_spec("cpu-ci", root).spec_hash
    data = spec_data("cpu-ci")
    write_spec(root, "copy", data)
    assert load_spec("copy", root).spec_hash == base  # same data, other file: same hash
    data["python"]["requirements"] = ["torch==2.12.0"]
    write_spec(root, "copy", data)
    assert load_spec("copy", root).spec_hash != base


def test_find_root(root: Path, tmp_path_factory, monkeypatch):
    monkeypatch.delenv("CORDEE_ROOT", raising=False)
    sub = root / "images" / "sources"
    assert find_root(sub) == root.resolve()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert find_root(elsewhere) == REPO  # falls back to the checkout the package runs from
    monkeypatch.setenv("CORDEE_ROOT", str(root))
    assert find_root(elsewhere) == root.resolve()
    monkeypatch.setenv("CORDEE_ROOT", str(elsewhere))
    with pytest.raises(InputError, match="CORDEE_ROOT=.*no images/ and recipes/"):
        find_root()


def test_list_specs_skips_names_that_cannot_be_images(root: Path):
    write_spec(root, "Bad_Name", "kind: container\n")
    (root / "images" / "notes.txt").write_text("x")
    names = list_specs(root)
    assert names == sorted(names) and "Bad_Name" not in names and "cpu-ci" in names


def _mutate(name: str, change):
    data = spec_data(name)
    change(data)
    return data


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return change


def _delete(path: str):
    def change(data):
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[last]

    return change


# (spec to start from, change, text the one-line error must contain)
BAD = {
    "unknown top-level key": (
        "cpu-ci",
        _set("pyton", {}),
        "field 'pyton': is not a known field; allowed: kind",
    ),
    "unknown nested key": ("pytorch-ngc-gh200", _set("network.varaint", "cuda12"), "'network.varaint'"),
    "wrong type: list wanted": ("cpu-ci", _set("python.requirements", "torch==2.13.0"), "must be a list"),
    "wrong type: number for a string": (
        "pytorch-ngc-gh200",
        _set("network.cuda_arch", 90),
        "field 'network.cuda_arch': must be a string, got an integer 90 (quote it",
    ),
    "wrong type: string for a bool": (
        "cpu-ci",
        _set("edf.writable", "yes"),
        "'edf.writable': must be true or false",
    ),
    "bad version string": (
        "pytorch-cuda-gh200",
        _set(
            "sources",
            {
                "nccl-tests": {
                    "version": "latest",
                    "url": "https://x.org/a.tgz",
                    "sha256": "a" * 64,
                    "checksum_source": "x",
                }
            },
        ),
        "field 'sources.nccl-tests.version': 'latest' is not valid; allowed: a version",
    ),
    "version as a YAML number": (
        "pytorch-cuda-gh200",
        _set(
            "sources",
            {
                "nccl-tests": {
                    "version": 2.17,
                    "url": "https://x.org/a.tgz",
                    "sha256": "a" * 64,
                    "checksum_source": "x",
                }
            },
        ),
        "'sources.nccl-tests.version': must be a string, got a number 2.17",
    ),
    "requirement not pinned": (
        "cpu-ci",
        _set("python.requirements", ["torch>=2"]),
        "'python.requirements[0]'",
    ),
    "bad sha256": (
        "pytorch-cuda-gh200",
        _set(
            "sources",
            {
                "nccl-tests": {
                    "version": "2.17.6",
                    "url": "https://x.org/a.tgz",
                    "sha256": "abc",
                    "checksum_source": "x",
                }
            },
        ),
        "'sources.nccl-tests.sha256'",
    ),
    "url and git both": (
        "pytorch-cuda-gh200",
        _set(
            "sources",
            {
                "nccl-tests": {
                    "version": "2.17.6",
                    "url": "https://x.org/a.tgz",
                    "sha256": "a" * 64,
                    "git": "https://x.org/r.git",
                    "commit": "a" * 40,
                    "checksum_source": "x",
                }
            },
        ),
        "'sources.nccl-tests': needs either url + sha256",
    ),
    "missing referenced file": (
        "pytorch-ngc-gh200",
        _set("sources_file", "sources/nope.yaml"),
        "field 'sources_file'",
    ),
    "unknown profile": (
        "cpu-ci",
        _set("fabric_profile", "myrinet"),
        "field 'fabric_profile': unknown profile 'myrinet'",
    ),
    "unknown variant": (
        "pytorch-ngc-gh200",
        _set("network.variant", "cuda11"),
        "allowed: cuda12, cuda13, cuda-dl",
    ),
    "hook without variant": (
        "pytorch-ngc-gh200",
        _delete("network.variant"),
        "'network.variant': is required",
    ),
    "builtin without sources": (
        "pytorch-cuda-gh200",
        _delete("sources_file"),
        "field 'sources': network.stack builtin",
    ),
    "short image name": ("pytorch-ngc-gh200", _set("base.image", "pytorch:25.06-py3"), "'base.image'"),
    "image without tag": ("pytorch-ngc-gh200", _set("base.image", "nvcr.io/nvidia/pytorch"), "'base.image'"),
    "debootstrap with platform": ("cpu-ci", _set("base.platform", "linux/arm64"), "'base.platform'"),
    "two bases": (
        "cpu-ci",
        _set("base.image", "nvcr.io/nvidia/pytorch:25.06-py3"),
        "field 'base': needs exactly one",
    ),
    "wheelhouse for another arch": (
        "pytorch-ngc-gh200",
        _set("python.requirements", ["numpy==2.0.0"]),
        "field 'python.source': wheelhouse requirements",
    ),
    "env var set by profile": (
        "cpu-ci",
        _set("env", {"MPICH_GPU_SUPPORT_ENABLED": "1"}),
        "field 'env.MPICH_GPU_SUPPORT_ENABLED': is set by fabric profile 'single-node'",
    ),
    "bad env name": ("cpu-ci", _set("env", {"1BAD": "x"}), "field 'env.1BAD'"),
    "control character": (
        "cpu-ci",
        _set("description", "two\nlines"),
        "field 'description': contains the character U+000A",
    ),
    "bidi override": (
        "cpu-ci",
        _set("env", {"X": "a\u202eb"}),
        "field 'env.X': contains the character U+202E",
    ),
    "EDF escape in literal": ("cpu-ci", _set("env", {"X": "a$${B}"}), "field 'env.X': must not contain '$$'"),
    "relative mount target": (
        "cpu-ci",
        _set("edf.mounts", ["/a:b"]),
        "'edf.mounts[0]': destination 'b' must be an absolute path",
    ),
    # what `cordee edf check` refuses in the rendered EDF is refused in the spec already
    "unknown mount flag": (
        "cpu-ci",
        _set("edf.mounts", ["/a:/b:ro+foo"]),
        "'edf.mounts[0]': unknown mount flag 'foo'",
    ),
    "sqsh with other flags": (
        "cpu-ci",
        _set("edf.mounts", ["/d.sqsh:/data:sqsh+ro"]),
        "'edf.mounts[0]': 'sqsh' must be the only flag",
    ),
    # one mount grammar: edf check's (edf/fields.py mount_syntax), which refuses these two as well
    "relative mount source": (
        "cpu-ci",
        _set("edf.mounts", ["data:/data"]),
        "'edf.mounts[0]': source 'data' must be an absolute path or start with ./",
    ),
    "empty mount flag": ("cpu-ci", _set("edf.mounts", ["/a:/b:ro++nosuid"]), "'edf.mounts[0]': empty flag"),
    "unterminated variable in a mount": (
        "cpu-ci",
        _set("edf.mounts", ["${SCRATCH/d:/d"]),
        "'edf.mounts[0]': unterminated '${'",
    ),
    "mount target with ..": (
        "cpu-ci",
        _set("edf.mounts", ["/a:/b/../c:ro"]),
        "'edf.mounts[0]': destination '/b/../c' must not contain '..'",
    ),
    "annotation value edf check refuses": (
        "cpu-ci",
        _set("edf.annotations", {"com.hooks.ssh.enabled": "yes"}),
        "field 'edf.annotations.com.hooks.ssh.enabled': 'yes' is not allowed",
    ),
    "ssh hook in a read-only container": (
        "cpu-ci",
        _set("edf", {"writable": False, "annotations": {"com.hooks.ssh.enabled": "true"}}),
        "field 'edf.writable': com.hooks.ssh needs a writable container",
    ),
    "hook annotation by hand": (
        "cpu-ci",
        _set("edf.annotations", {"com.hooks.cxi.enabled": "true"}),
        "'edf.annotations.com.hooks.cxi.enabled': is set from network",
    ),
    "annotation table clash": (
        "cpu-ci",
        _set("edf.annotations", {"com.x": "1", "com.x.y": "2"}),
        "TOML cannot hold both",
    ),
    "reserved label": (
        "cpu-ci",
        _set("labels", {"org.cordee.version": "9"}),
        "'labels.org.cordee.version': is set by cordee",
    ),
    "path with dot-dot": ("cpu-ci", _set("python.venv", "/opt/../etc"), "'python.venv'"),
    "duplicate list entry": (
        "cpu-ci",
        _set("base.debootstrap.include", ["python3", "python3"]),
        "listed twice",
    ),
    "missing kind": ("cpu-ci", _delete("kind"), "field 'kind': is required; allowed: container, uenv"),
    "uenv: py-cordee by hand": (
        "pytorch-uenv-gh200",
        _set("uenv.environment.specs", ["py-cordee@0.1.0"]),
        "'uenv.environment.specs[0]': py-cordee is added by cordee",
    ),
    "uenv: gcc spec stackinator refuses": (
        "pytorch-uenv-gh200",
        _set("uenv.compilers.gcc", "gcc@13.2.10"),
        "'uenv.compilers.gcc'",
    ),
    "uenv: unknown MPI": ("pytorch-uenv-gh200", _set("uenv.mpi", {"spec": "openmpi@5"}), "'uenv.mpi.spec'"),
    "uenv: spack spec with shell": (
        "pytorch-uenv-gh200",
        _set("uenv.environment.specs", ["nccl; rm -rf /"]),
        "'uenv.environment.specs[0]'",
    ),
    "uenv: braces for Spack modules": ("pytorch-uenv-gh200", _set("env", {"X": "{prefix}"}), "field 'env.X'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_is_one_clear_error(root: Path, case: str):
    start, change, expected = BAD[case]
    path = write_spec(root, "bad", _mutate(start, change))
    with pytest.raises(SpecError) as info:
        load_spec("bad", root)
    message = str(info.value)
    assert info.value.lines == [message], info.value.lines  # one change, one error
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_mounts_edf_check_accepts_are_accepted(root: Path):
    """The spec checks mounts with edf check's grammar: its options (x-create=dir among them) and
    ${VAR}, which the Container Engine expands when the job starts."""
    mounts = ["/capstor", "${SCRATCH}/d.sqsh:/data:sqsh", "/a:/b:x-create=dir+ro", "./rel:/rel", "${A}:${B}"]
    write_spec(root, "mounts", _mutate("cpu-ci", _set("edf.mounts", mounts)))
    assert load_spec("mounts", root).data["edf"]["mounts"] == mounts


# Five errors in five places, none caused by another: one run reports them all.
FIVE_ERRORS = {
    "pyton": ({}, "field 'pyton': is not a known field"),
    "edf.writable": ("yes", "field 'edf.writable': must be true or false, got a string 'yes'"),
    "python.requirements": (["numpy==2.0.0", "torch>=2"], "field 'python.requirements[1]': 'torch>=2'"),
    "env": ({"OK": "1", "1BAD": "x"}, "field 'env.1BAD': '1BAD' is not valid"),
    "fabric_profile": ("myrinet", "field 'fabric_profile': unknown profile 'myrinet'"),
}


def _five_errors(root: Path) -> Path:
    data = spec_data("cpu-ci")
    for where, (value, _) in FIVE_ERRORS.items():
        _set(where, value)(data)
    return write_spec(root, "five", data)


def test_every_independent_error_in_one_run(root: Path):
    path = _five_errors(root)
    with pytest.raises(SpecError) as info:
        load_spec("five", root)
    lines = info.value.lines
    assert len(lines) == len(FIVE_ERRORS), lines
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    for _, expected in FIVE_ERRORS.values():
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    # str() keeps the one-line contract for every other verb: the first error and how many more
    assert str(info.value) == f"{lines[0]} (and 4 more: `cordee image validate` lists them all)"


def test_render_of_a_spec_with_five_errors_is_one_line(root: Path):
    _five_errors(root)
    cp = subprocess.run(
        [sys.executable, "-m", "cordee", "image", "render", "five", "--out", str(root / "out")],
        capture_output=True, text=True, env={**os.environ, "CORDEE_ROOT": str(root)}, timeout=60,
    )  # fmt: skip
    assert cp.returncode == 2 and len(cp.stderr.splitlines()) == 1, cp.stderr
    assert "(and 4 more: `cordee image validate` lists them all)" in cp.stderr


def test_errors_in_the_spec_and_its_sources_file_are_reported_together(root: Path):
    sources = root / "images" / "sources" / "two-bad.yaml"
    entry = {"version": "2.2.0", "url": "ftp://x/a.tgz", "sha256": "a" * 64, "checksum_source": "x"}
    libcxi = {**entry, "version": "latest", "url": "https://x/a.tgz"}
    sources.write_text(yaml.safe_dump({"libcxi": libcxi, "libfabric": entry}))
    data = _mutate("pytorch-ngc-gh200", _set("sources_file", "sources/two-bad.yaml"))
    path = write_spec(root, "ngc", {**data, "fabric_profile": "myrinet"})
    with pytest.raises(SpecError) as info:
        load_spec("ngc", root)
    known, version, url = ", ".join(profiles.names()), grammars.VERSION.allowed, grammars.HTTPS_URL.allowed
    assert info.value.lines == [
        f"{path}: field 'fabric_profile': unknown profile 'myrinet'; allowed: {known}",
        f"{sources}: field 'libcxi.version': 'latest' is not valid; allowed: {version}",
        f"{sources}: field 'libfabric.url': 'ftp://x/a.tgz' is not valid; allowed: {url}",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: [unclosed\n", "line 2, column 1: not valid YAML"),
        ("kind: container\nkind: uenv\n", "line 2: key 'kind' appears twice"),
        ("", "field '(top level)': must be a mapping"),
        ("- a list\n", "field '(top level)': must be a mapping"),
        (b"kind: \xff\xfe\n", "not UTF-8 (invalid start byte at byte 6)"),
        # only YAML's safe tags: a Python object tag is refused, not constructed
        (
            "kind: !!python/object/apply:os.getcwd []\n",
            "line 1, column 7: not valid YAML: could not determine",
        ),
    ],
)
def test_unparsable_spec(root: Path, text: str | bytes, expected: str):
    path = write_spec(root, "bad", text)
    with pytest.raises(SpecError, match=r"^" + str(path).replace(".", r"\.")) as info:
        load_spec("bad", root)
    assert expected in str(info.value)


def test_bad_file_name_and_sources_file_errors_name_their_file(root: Path):
    path = write_spec(root, "Bad_Name", spec_data("cpu-ci"))
    with pytest.raises(SpecError, match="spec name 'Bad_Name'.*podman image name"):
        load_spec(str(path))
    sources = root / "images" / "sources" / "broken.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "libfabric": {
                    "version": "2.2.0",
                    "url": "ftp://x/a.tgz",
                    "sha256": "a" * 64,
                    "checksum_source": "x",
                }
            }
        )
    )
    write_spec(root, "ngc", _mutate("pytorch-ngc-gh200", _set("sources_file", "sources/broken.yaml")))
    with pytest.raises(
        SpecError,
        match=rf"^{sources}: field 'libfabric.url': 'ftp://x/a.tgz' is not valid; allowed: an https://",
    ):
        load_spec("ngc", root)


def test_one_field_switches_the_network_stack(root: Path):
    write_spec(root, "ngc-builtin", _mutate("pytorch-ngc-gh200", _set("network.stack", "builtin")))
    data = load_spec("ngc-builtin", root).data
    assert data["network"]["stack"] == "builtin" and data["network"]["cxi_hook"] is False


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CORDEE_ROOT"}
    return subprocess.run(
        [sys.executable, "-m", "cordee", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_validate_bad_spec_exits_2_with_one_line(root: Path):
    path = write_spec(root, "bad", _mutate("pytorch-ngc-gh200", _set("network.variant", "cuda11")))
    result = _cli("image", "validate", "bad", cwd=root)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "'network.variant'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    ok = _cli("image", "validate", "cpu-ci", cwd=root)
    assert ok.returncode == 0, ok.stderr


def test_cli_validate_prints_every_error_one_per_line(root: Path):
    path = _five_errors(root)
    result = _cli("image", "validate", "five", cwd=root)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(FIVE_ERRORS), result.stderr
    for _, expected in FIVE_ERRORS.values():
        assert sum(str(path) in line and expected in line for line in lines) == 1, (expected, result.stderr)
    assert "Traceback" not in result.stderr


def test_canonical_json_is_order_independent():
    a = canonical_json({"b": [1, {"y": 2, "x": "é"}], "a": None})
    b = canonical_json(json.loads('{"a": null, "b": [1, {"x": "é", "y": 2}]}'))
    assert a == b == '{"a":null,"b":[1,{"x":"é","y":2}]}'.encode()
