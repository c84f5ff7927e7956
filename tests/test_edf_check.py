"""EDF checker (cordee.edf.load): real EDF files in temporary directories, real squashfs images
made by mksquashfs, lookup through $EDF_PATH, `${VAR}` expansion, inheritance chains and cycles.
Examples are the ones of cscs-docs (container-engine/edf.md, run.md, resource-hook.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cordee.edf.expand import expand
from cordee.edf.load import MAX_DEPTH, EdfError, Mount, check_edf, find_edf, load_edf
from cordee.errors import InputError


@pytest.fixture
def env(tmp_path):
    """A host environment with its own EDF_PATH (two directories) and HOME."""
    (tmp_path / "edf").mkdir()
    (tmp_path / "edf2").mkdir()
    (tmp_path / "home").mkdir()
    return {
        "HOME": str(tmp_path / "home"),
        "USER": "alice",
        "SCRATCH": "/capstor/scratch/cscs/alice",
        "PATH": "/usr/bin:/bin",
        "EDF_PATH": f"{tmp_path / 'edf'}:{tmp_path / 'edf2'}",
    }


@pytest.fixture(scope="module")
def sqsh(tmp_path_factory) -> Path:
    """A real squashfs image."""
    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs (squashfs-tools) is not installed")
    root = tmp_path_factory.mktemp("rootfs")
    (root / "etc").mkdir()
    (root / "etc" / "os-release").write_text("ID=test\n")
    out = tmp_path_factory.mktemp("img") / "test.sqsh"
    subprocess.run(["mksquashfs", str(root), str(out), "-noappend", "-quiet"], check=True, timeout=60)
    return out


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def edf_dir(env) -> Path:
    return Path(env["EDF_PATH"].split(":")[0])


def errors(report):
    return [(f.field, f.message) for f in report.findings if f.severity == "error"]


def warnings(report):
    return [(f.field, f.message) for f in report.findings if f.severity == "warning"]


def one(report, severity: str, field: str) -> str:
    """The message of the only finding of that severity on that field."""
    (msg,) = [f.message for f in report.findings if f.severity == severity and f.field == field]
    return msg


# --- valid files from the CSCS docs ---------------------------------------------------------------

DOC_IMAGES = [
    "library/ubuntu:24.04",
    "docker.io#library/ubuntu:24.04",
    "nvcr.io#nvidia/pytorch:22.12-py3",
    "quay.io#madeeks/osu-mb:6.2-mpich4.1-ubuntu22.04-arm64",
    "nvcr.io/nvidia/pytorch:25.11-py3",
    "nvcr.io#nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04",
    "ubuntu:latest",
    "alice@nvcr.io#nvidia/pytorch:25.06-py3",
    "localhost:5000#team/img",
]


@pytest.mark.parametrize("image", DOC_IMAGES)
def test_documented_image_references_are_valid(tmp_path, env, image):
    report = check_edf(str(write(tmp_path, "e.toml", f'image = "{image}"\n')), env)
    assert report.findings == [] and report.ok
    assert report.edf.image == image


def test_ngc_pytorch_example_resolves(tmp_path, env, sqsh):
    text = f"""
image = "{sqsh}"
mounts = ["/capstor", "/iopsstor", "/capstor/scratch/cscs/${{USER}}:/capstor/scratch/cscs/${{USER}}",
          "${{SCRATCH}}:/scratch:ro+private", "{sqsh}:/data:sqsh"]
workdir = "${{SCRATCH}}"

[annotations]
com.hooks.aws_ofi_nccl.enabled = "true"
com.hooks.aws_ofi_nccl.variant = "cuda12"

[env]
NCCL_DEBUG = "INFO"
CUDA_CACHE_DISABLE = "1"
TORCH_NCCL_ASYNC_ERROR_HANDLING = "1"
MPICH_GPU_SUPPORT_ENABLED = "0"
PATH = "${{PATH}}:/custom/bin"
UNSET_ME = ""
"""
    report = check_edf(str(write(tmp_path, "ngc.toml", text)), env)
    assert report.findings == []
    edf = report.edf
    assert edf.image == str(sqsh)
    assert edf.mounts == (
        Mount("/capstor", "/capstor", ()),
        Mount("/iopsstor", "/iopsstor", ()),
        Mount("/capstor/scratch/cscs/alice", "/capstor/scratch/cscs/alice", ()),
        Mount("/capstor/scratch/cscs/alice", "/scratch", ("ro", "private")),
        Mount(str(sqsh), "/data", ("sqsh",)),
    )
    assert edf.workdir == "/capstor/scratch/cscs/alice"
    assert edf.annotations == {
        "com.hooks.aws_ofi_nccl.enabled": "true",
        "com.hooks.aws_ofi_nccl.variant": "cuda12",
    }
    assert edf.env["PATH"] == "/usr/bin:/bin:/custom/bin" and edf.env["UNSET_ME"] == ""
    assert list(edf.env) == ["NCCL_DEBUG", "CUDA_CACHE_DISABLE", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
                             "MPICH_GPU_SUPPORT_ENABLED", "PATH", "UNSET_ME"]  # fmt: skip
    assert (edf.entrypoint, edf.writable) == (True, True)  # edf.md defaults
    assert edf.chain == (str(tmp_path / "ngc.toml"),)


@pytest.mark.parametrize(
    "annotations",
    [
        '[annotations.com.hooks.ssh]\nauthorize_ssh_key = "${SCRATCH}/keys/id.pub"\nenabled = "true"\n',
        '[annotations]\ncom.hooks.ssh.authorize_ssh_key = "/path/to/keys"\ncom.hooks.ssh.enabled = "true"\n',
        '[annotations]\n"com.hooks.ssh.enabled" = "true"\n"com.hooks.ssh.authorize_ssh_key" = "/k"\n',
    ],
)
def test_annotation_spellings_flatten_to_dotted_names(tmp_path, env, annotations):
    report = check_edf(str(write(tmp_path, "e.toml", 'image = "ubuntu:24.04"\n' + annotations)), env)
    assert report.ok and report.findings == []
    assert report.edf.annotations["com.hooks.ssh.enabled"] == "true"
    assert report.edf.annotations["com.hooks.ssh.authorize_ssh_key"].startswith("/")


def test_toml_that_defines_a_table_twice_is_a_syntax_error(tmp_path, env):
    text = '[annotations]\ncom.hooks.ssh.authorize_ssh_key = "/k"\n\n'
    text += '[annotations.com.hooks.ssh]\nenabled = "true"\n'  # cscs-docs' "Invalid" example
    report = check_edf(str(write(tmp_path, "e.toml", text)), env)
    assert [f for f, _ in errors(report)] == ["toml"] and report.edf is None


# --- the image -------------------------------------------------------------------------------------


def test_image_paths(tmp_path, env, sqsh, monkeypatch):
    not_sqsh = write(tmp_path, "plain.sqsh", "not a squashfs")
    msg = one(check_edf(str(write(tmp_path, "a.toml", f'image = "{not_sqsh}"\n')), env), "error", "image")
    assert "not a squashfs" in msg
    missing = tmp_path / "missing.sqsh"
    report = check_edf(str(write(tmp_path, "b.toml", f'image = "{missing}"\n')), env)
    assert report.ok and "does not exist" in one(report, "warning", "image")
    assert "directory" in one(
        check_edf(str(write(tmp_path, "c.toml", f'image = "{tmp_path}"\n')), env), "error", "image"
    )
    monkeypatch.chdir(sqsh.parent)  # relative paths: from the working directory, not the EDF's
    report = check_edf(str(write(tmp_path, "d.toml", f'image = "./{sqsh.name}"\n')), env)
    assert report.findings == [] and report.edf.image == str(sqsh)


@pytest.mark.parametrize("image", ["Ubuntu:24.04", "nvcr.io#", "ubuntu:", "a b", "nvcr.io##x", "x:tag:more"])
def test_malformed_image_references(tmp_path, env, image):
    msg = one(check_edf(str(write(tmp_path, "e.toml", f'image = "{image}"\n')), env), "error", "image")
    assert "[USER@][REGISTRY#]IMAGE[:TAG]" in msg


def test_no_image_is_a_warning(tmp_path, env):
    report = check_edf(str(write(tmp_path, "e.toml", 'workdir = "/tmp"\n')), env)
    assert report.ok and "will not enter a container" in one(report, "warning", "image")
    assert report.edf.image == "" and report.edf.workdir == "/tmp"


# --- syntax, keys and types ------------------------------------------------------------------------


def test_toml_syntax_error_names_the_line(tmp_path, env):
    path = write(tmp_path, "e.toml", 'image = "ubuntu:24.04"\n\nmounts = ["/a:/b",\nwritable = true\n')
    report = check_edf(str(path), env)
    (field, msg), = errors(report)  # fmt: skip
    assert field == "toml" and "line 4" in msg and report.edf is None and not report.ok


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path, env):
    report = check_edf(
        str(write(tmp_path, "e.toml", 'imgae = "ubuntu"\nfoo = 1\n[environment]\nA = "1"\n')), env
    )
    assert {f for f, _ in errors(report)} == {"imgae", "foo", "environment"}
    assert "did you mean 'image'" in one(report, "error", "imgae")
    assert "allowed: base_environment, image" in one(report, "error", "foo")


@pytest.mark.parametrize(
    "line, field, wanted",
    [
        ("image = 3", "image", "a string, not an integer"),
        ("workdir = ['/a']", "workdir", "a string, not an array"),
        ('entrypoint = "false"', "entrypoint", "a boolean"),
        ("writable = 1", "writable", "a boolean"),
        ('mounts = "/a:/b"', "mounts", "an array of strings"),
        ("mounts = [1]", "mounts[0]", "a string"),
        ('env = "A=1"', "env", "a table"),
        ("base_environment = 1", "base_environment", "a string or an array"),
        ('base_environment = ["", 2]', "base_environment[1]", "a non-empty string"),
        ('annotations = "x"', "annotations", "a table"),
    ],
)
def test_wrong_types_name_the_field(tmp_path, env, line, field, wanted):
    report = check_edf(str(write(tmp_path, "e.toml", f"{line}\n")), env)
    assert wanted in one(report, "error", field)


def test_env_and_annotation_values_must_be_strings(tmp_path, env):
    text = '[env]\nA = 1\nB.C = "x"\n[annotations]\ncom.hooks.cxi.enabled = true\n'
    report = check_edf(str(write(tmp_path, "e.toml", text)), env)
    assert "not an integer" in one(report, "error", "env.A")
    assert "not a table" in one(report, "error", "env.B")
    assert '"true", with quotes' in one(report, "error", "annotations.com.hooks.cxi.enabled")


def test_odd_env_names_are_warnings(tmp_path, env):
    report = check_edf(str(write(tmp_path, "e.toml", 'image = "ubuntu"\n[env]\n"MY-VAR" = "1"\n')), env)
    assert report.ok and "portable" in one(report, "warning", "env.MY-VAR")
    assert check_edf(str(write(tmp_path, "f.toml", '[env]\n"" = "1"\n')), env).ok is False


def test_unreadable_and_binary_files(tmp_path, env):
    path = tmp_path / "bin.toml"
    path.write_bytes(b'image = "\xff\xfe"\n')
    assert "UTF-8" in one(check_edf(str(path), env), "error", "file")
    unreadable = tmp_path / "mem.toml"  # /proc/self/mem: a regular file that not even root can read (EIO)
    unreadable.symlink_to("/proc/self/mem")
    assert "cannot read" in one(check_edf(str(unreadable), env), "error", "file")


# --- mounts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, mount",
    [
        ("/capstor", Mount("/capstor", "/capstor", ())),
        ("/a:/b", Mount("/a", "/b", ())),
        ("/a:/b:", Mount("/a", "/b", ())),
        ("/a:/b:ro", Mount("/a", "/b", ("ro",))),
        ("/a:/b:ro+private", Mount("/a", "/b", ("ro", "private"))),
        (
            "/a:/b:rw+rslave+nosuid+x-create=dir",
            Mount("/a", "/b", ("rw", "rslave", "nosuid", "x-create=dir")),
        ),
        ("/a/data.sqsh:/data:sqsh", Mount("/a/data.sqsh", "/data", ("sqsh",))),
    ],
)
def test_valid_mounts(tmp_path, env, text, mount):
    report = check_edf(str(write(tmp_path, "e.toml", f'image = "ubuntu"\nmounts = ["{text}"]\n')), env)
    assert report.ok and report.edf.mounts == (mount,)
    assert all("does not exist" in m for _, m in warnings(report))  # only the sqsh source is looked at


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is not SRC:DST[:FLAGS]"),
        (":/b", "is not SRC:DST[:FLAGS]"),
        ("/a::ro", "is not SRC:DST[:FLAGS]"),
        ("/a:/b:ro:x", "is not SRC:DST[:FLAGS]"),
        ("data:/data", "source 'data' must be an absolute path or start with ./"),
        ("/a:data", "destination 'data' must be an absolute path"),
        ("/a:/x/../etc", "must not contain '..'"),
        ("/a:/b:readonly", "unknown mount flag 'readonly'"),
        ("/a:/b:ro,private", "unknown mount flag 'ro,private'"),
        ("/a:/b:ro++private", "empty flag"),
        ("/a.sqsh:/b:sqsh+ro", "'sqsh' must be the only flag"),
    ],
)
def test_invalid_mounts(tmp_path, env, text, message):
    report = check_edf(
        str(write(tmp_path, "e.toml", f'image = "ubuntu"\nmounts = ["/ok:/ok", "{text}"]\n')), env
    )
    assert message in one(report, "error", "mounts[1]") and report.edf is None


def test_mount_warnings_and_squashfs_sources(tmp_path, env, sqsh):
    text = f'image = "ubuntu"\nmounts = ["/a:/b:ro+rw", "{sqsh}:/d:sqsh", "{tmp_path}:/e:sqsh"]\n'
    report = check_edf(str(write(tmp_path, "e.toml", text)), env)
    assert "later one wins" in one(report, "warning", "mounts[0]")
    assert "is a directory" in one(report, "error", "mounts[2]")
    assert [f for f in report.findings if f.field == "mounts[1]"] == []  # a real squashfs: fine


def test_relative_mount_source_is_resolved_from_the_working_directory(tmp_path, env, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    report = check_edf(
        str(write(tmp_path, "e.toml", 'image = "ubuntu"\nmounts = ["./data:/data", "../x:/x"]\n')), env
    )
    assert report.edf.mounts == (Mount(str(work / "data"), "/data", ()), Mount(str(tmp_path / "x"), "/x", ()))


# --- ${VAR} expansion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("${A}", "1"),
        ("x${A}y${B}z", "x1y/twoz"),
        ("${NOPE:-}", ""),
        ("${A:-}", "1"),
        ("$${A}", "${A}"),
        ("$${NOPE}/${A}", "${NOPE}/1"),
        ("$$", "$$"),
        ("a$", "a$"),
        ("100%", "100%"),
    ],
)
def test_expansion_rules(text, value):
    result = expand(text, {"A": "1", "B": "/two"})
    assert (result.value, result.errors, result.warnings) == (value, [], [])


@pytest.mark.parametrize(
    "text, error",
    [
        ("${NOPE}", "undefined variable NOPE (write ${NOPE:-}"),
        ("${A", "unterminated '${'"),
        ("${}", "is not a variable reference"),
        ("${1X}", "is not a variable reference"),
        ("${A-x}", "is not a variable reference"),
    ],
)
def test_expansion_errors(text, error):
    result = expand(text, {"A": "1"})
    assert len(result.errors) == 1 and error in result.errors[0]


def test_undocumented_forms_are_warnings():
    result = expand("${NOPE:-/default} ${A:-/d} $HOME", {"A": "1"})
    assert result.value == "/default 1 $HOME" and result.errors == []
    assert len(result.warnings) == 3 and "${HOME}" in result.warnings[2]


def test_undefined_variables_are_named_per_field(tmp_path, env):
    text = """image = "${REG}#ubuntu"
workdir = "${WD}"
mounts = ["/a:/a", "${DATA}:/data"]
base_environment = "${BASE}"
[env]
X = "${XV}"
[annotations]
com.hooks.ssh.authorize_ssh_key = "${KEY}"
"""
    report = check_edf(str(write(tmp_path, "e.toml", text)), env)
    expected = {("image", "REG"), ("workdir", "WD"), ("mounts[1]", "DATA"), ("base_environment", "BASE"),
                ("env.X", "XV"), ("annotations.com.hooks.ssh.authorize_ssh_key", "KEY")}  # fmt: skip
    assert {(f, m.split()[2]) for f, m in errors(report)} == expected  # one error each, no follow-on noise


# --- lookup ----------------------------------------------------------------------------------------


def test_find_edf_search_path(tmp_path, env, monkeypatch):
    first, second = (Path(d) for d in env["EDF_PATH"].split(":"))
    write(second, "x.toml", "")
    assert find_edf("x", env) == second / "x.toml"
    write(first, "x.toml", "")
    assert find_edf("x", env) == first / "x.toml"  # directories in order
    home_edf = Path(env["HOME"]) / ".edf"
    home_edf.mkdir()
    write(home_edf, "y.toml", "")
    assert find_edf("y", {**env, "EDF_PATH": ""}) == home_edf / "y.toml"  # default ~/.edf
    with pytest.raises(EdfError) as e:
        find_edf("y", {**env, "EDF_PATH": f"relative/dir:{first}"})
    assert "relative/dir (ignored: not absolute)" in str(e.value) and str(first / "y.toml") in str(e.value)
    assert isinstance(e.value, InputError)
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "local.toml", "")
    assert find_edf("local.toml", env) == tmp_path / "local.toml"  # ends in .toml: a path
    assert find_edf("./edf/x.toml", env) == first / "x.toml"
    assert find_edf(str(first / "x.toml"), env) == first / "x.toml"
    with pytest.raises(EdfError, match="not found"):
        find_edf("./nothere.toml", env)
    with pytest.raises(EdfError, match="not found"):
        check_edf("nothere", env)


# --- inheritance -----------------------------------------------------------------------------------


def test_inheritance_merges_in_order(tmp_path, env):
    d = edf_dir(env)
    write(d, "common.toml", """image = "ubuntu:22.04"
workdir = "/w"
writable = false
mounts = ["/common:/common"]
[env]
A = "common"
B = "common"
[annotations]
com.hooks.cxi.enabled = "false"
""")  # fmt: skip
    write(d, "ml.toml", """image = "nvcr.io#nvidia/pytorch:25.06-py3"
mounts = ["/ml:/ml"]
[env]
B = "ml"
C = "ml"
[annotations]
com.hooks.aws_ofi_nccl.enabled = "true"
com.hooks.aws_ofi_nccl.variant = "cuda-dl"
""")  # fmt: skip
    top = write(tmp_path, "top.toml", """base_environment = ["common", "ml"]
entrypoint = false
mounts = ["/top:/top"]
[env]
C = "top"
[annotations]
com.hooks.cxi.enabled = "true"
""")  # fmt: skip
    report = check_edf(str(top), env)
    assert report.findings == []
    edf = report.edf
    assert edf.image == "nvcr.io#nvidia/pytorch:25.06-py3"  # the later base overrides the earlier
    assert (edf.workdir, edf.writable, edf.entrypoint) == ("/w", False, False)  # inherited unless set
    assert [m.dst for m in edf.mounts] == ["/common", "/ml", "/top"]  # appended, base first
    assert edf.env == {"A": "common", "B": "ml", "C": "top"}  # the file's own last wins
    assert edf.annotations == {"com.hooks.cxi.enabled": "true", "com.hooks.aws_ofi_nccl.enabled": "true",
                               "com.hooks.aws_ofi_nccl.variant": "cuda-dl"}  # fmt: skip
    assert edf.chain == (str(d / "common.toml"), str(d / "ml.toml"), str(top))


def test_diamond_inheritance_keeps_each_file_and_mount_once(tmp_path, env):
    d = edf_dir(env)
    write(d, "root.toml", 'image = "ubuntu"\nmounts = ["/r:/r"]\nbogus = 1\n')
    write(d, "left.toml", 'base_environment = "root"\n')
    write(d, "right.toml", 'base_environment = "root"\n')
    report = check_edf(str(write(tmp_path, "top.toml", 'base_environment = ["left", "right"]\n')), env)
    assert errors(report) == [("bogus", "unknown key; allowed: base_environment, image, workdir, entrypoint, "
                                        "writable, mounts, env, annotations")]  # fmt: skip
    assert report.findings[0].file == str(d / "root.toml")  # the finding names the base that has it
    d_root = d / "root.toml"
    d_root.write_text('image = "ubuntu"\nmounts = ["/r:/r"]\n')
    edf = load_edf(str(tmp_path / "top.toml"), env)
    assert edf.mounts == (Mount("/r", "/r", ()),)
    assert edf.chain == (str(d_root), str(d / "left.toml"), str(d / "right.toml"), str(tmp_path / "top.toml"))


def _chain(env, length: int) -> Path:
    """e0 -> e1 -> ... -> e{length}: e0 has `length` levels of bases below it."""
    d = edf_dir(env)
    for i in range(length):
        write(d, f"e{i}.toml", f'base_environment = "e{i + 1}"\nmounts = ["/m{i}:/m{i}"]\n')
    write(d, f"e{length}.toml", 'image = "ubuntu:24.04"\n')
    return d / "e0.toml"


def test_ten_levels_of_inheritance_are_allowed(env):
    _chain(env, MAX_DEPTH)
    edf = load_edf("e0", env)
    assert MAX_DEPTH == 10 and len(edf.chain) == 11 and edf.image == "ubuntu:24.04"
    assert [m.dst for m in edf.mounts] == [f"/m{i}" for i in range(9, -1, -1)]


def test_eleven_levels_of_inheritance_are_an_error(env):
    _chain(env, MAX_DEPTH + 1)
    report = check_edf("e0", env)
    (field, msg), = errors(report)  # fmt: skip
    assert field == "base_environment" and "more than 10 levels" in msg
    assert msg.endswith(" -> ".join(f"e{i}.toml" for i in range(12)))
    assert report.findings[0].file == str(edf_dir(env) / "e10.toml")
    with pytest.raises(EdfError, match="more than 10 levels"):
        load_edf("e0", env)


def test_cycles_are_named(tmp_path, env):
    d = edf_dir(env)
    write(d, "a.toml", 'base_environment = "b"\nimage = "ubuntu"\n')
    write(d, "b.toml", 'base_environment = ["c"]\n')
    write(d, "c.toml", 'base_environment = "a"\n')
    report = check_edf("a", env)
    assert errors(report) == [("base_environment", "inheritance cycle: a.toml -> b.toml -> c.toml -> a.toml")]
    write(d, "self.toml", 'base_environment = "self"\n')
    assert errors(check_edf("self", env)) == [
        ("base_environment", "inheritance cycle: self.toml -> self.toml")
    ]


def test_missing_and_broken_bases(tmp_path, env, monkeypatch):
    d = edf_dir(env)
    write(d, "broken.toml", 'image = "x\n')
    top = write(
        tmp_path, "top.toml", 'base_environment = ["nope", "broken", "./rel.toml"]\nimage = "ubuntu"\n'
    )
    report = check_edf(str(top), env)
    found = {(f.file, f.field) for f in report.findings if f.severity == "error"}
    assert found == {(str(top), "base_environment[0]"), (str(d / "broken.toml"), "toml"),
                     (str(top), "base_environment[2]")}  # fmt: skip
    monkeypatch.chdir(d)  # base paths are relative to the working directory, not to the EDF
    write(d, "rel.toml", 'mounts = ["/rel:/rel"]\n')
    write(d, "broken.toml", "")
    top.write_text('base_environment = ["broken", "./rel.toml"]\nimage = "ubuntu"\n')
    assert load_edf(str(top), env).mounts == (Mount("/rel", "/rel", ()),)


def test_base_names_are_expanded(tmp_path, env):
    write(edf_dir(env), "alice-base.toml", 'image = "ubuntu"\n')
    top = write(tmp_path, "top.toml", 'base_environment = "${USER}-base"\n')
    assert load_edf(str(top), env).image == "ubuntu"


# --- annotations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, severity, message",
    [
        ("com.hooks.cxi.enabled", "yes", "error", "allowed: 'true', 'false'"),
        ("com.hooks.aws_ofi_nccl.enabled", "True", "error", "allowed: 'true', 'false'"),
        ("com.hooks.aws_ofi_nccl.variant", "cuda-12", "error", "allowed: 'cuda12', 'cuda13', 'cuda-dl'"),
        ("com.hooks.aws_ofi_nccl.variant", "cuda11", "warning", "no longer listed"),
        ("com.hooks.ssh.authorize_ssh_key", "ssh-ed25519 AAAAC3Nza alice@x", "error", "not the key itself"),
        ("com.hooks.ssh.authorize_ssh_key", "keys/id.pub", "error", "absolute path"),
        ("com.hooks.ssh.port", "http", "error", "not a port number"),
        ("com.hooks.ssh.port", "70000", "error", "not a port number"),
        ("com.hooks.netstack.source", "artefact", "error", "'artifact:<version>'"),
        ("com.hooks.netstack.version", "", "error", "must not be empty"),
        ("com.hooks.aws_ofi_ncl.enabled", "true", "warning", "unknown annotation"),
    ],
)
def test_annotation_values(tmp_path, env, name, value, severity, message):
    text = f'image = "ubuntu"\n[annotations]\n"{name}" = "{value}"\n'
    assert message in one(
        check_edf(str(write(tmp_path, "e.toml", text)), env), severity, f"annotations.{name}"
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("com.hooks.netstack.source", "artifact:26.05.1"),
        ("com.hooks.netstack.source", "host"),
        ("com.hooks.ssh.port", "15263"),
        ("com.hooks.dcgm.enabled", "true"),
        ("com.pyxis.pytorch_remap_vars", "true"),
        ("com.pyxis.entrypoint_log", "false"),
        ("com.hooks.nvidia_cuda_mps.enabled", "true"),
    ],
)
def test_documented_annotations_pass(tmp_path, env, name, value):
    text = f'image = "ubuntu"\n[annotations]\n"{name}" = "{value}"\n'
    assert check_edf(str(write(tmp_path, "e.toml", text)), env).findings == []


def test_rules_across_fields(tmp_path, env):
    text = """image = "ubuntu"
writable = false
[annotations]
com.hooks.ssh.enabled = "true"
com.hooks.nvidia_cuda_mps.enabled = "true"
com.hooks.aws_ofi_nccl.enabled = "true"
[env]
NCCL_NET = "AWS Libfabric"
NCCL_NET_PLUGIN = "ofi"
"""
    report = check_edf(str(write(tmp_path, "e.toml", text)), env)
    assert sorted(m.split()[0] for f, m in errors(report) if f == "writable") == [
        "com.hooks.nvidia_cuda_mps", "com.hooks.ssh"]  # fmt: skip
    assert "without a key" in one(report, "warning", "annotations.com.hooks.ssh.authorize_ssh_key")
    assert "without a variant" in one(report, "warning", "annotations.com.hooks.aws_ofi_nccl.variant")
    plugin = [m for f, m in warnings(report) if f == "env.NCCL_NET_PLUGIN"]
    assert len(plugin) == 2 and any("AWS Libfabric not found" in m for m in plugin)
    artifact = 'image = "ubuntu"\n[annotations]\ncom.hooks.netstack.source = "artifact"\n'
    artifact += 'com.hooks.aws_ofi_nccl.enabled = "true"\ncom.hooks.aws_ofi_nccl.variant = "cuda12"\n'
    report = check_edf(str(write(tmp_path, "f.toml", artifact)), env)
    assert report.ok and "ignored" in one(report, "warning", "annotations.com.hooks.aws_ofi_nccl.variant")


# --- load_edf --------------------------------------------------------------------------------------


def test_load_edf_raises_the_first_error_and_counts_the_rest(tmp_path, env):
    path = write(tmp_path, "e.toml", 'image = 1\nwritable = "no"\nmounts = ["x"]\n')
    with pytest.raises(EdfError) as e:
        load_edf(str(path), env)
    msg = str(e.value)
    assert msg.startswith(f"{path}: image: must be a string") and "and 2 more: cordee edf check" in msg
    assert "\n" not in msg and e.value.exit_code == 2


def test_load_edf_accepts_warnings(tmp_path, env):
    path = write(tmp_path, "e.toml", 'mounts = ["/a:/b"]\n[annotations]\ncom.example.x = "1"\n')
    report = check_edf(str(path), env)
    assert report.ok and len(report.findings) == 2
    assert load_edf(str(path), env) == report.edf


# --- all of $HOME mounted (CSCS guidance: mount only subdirectories) -------------------------------


@pytest.mark.parametrize(
    "mount",
    ["${HOME}:/home/alice", "${HOME}/:/h", "/users/alice:/users/alice", "/users/alice/", "${HOME}:/x:ro"],
)
def test_a_mount_of_all_of_home_is_a_warning(tmp_path, env, mount):
    write(edf_dir(env), "h.toml", f'image = "ubuntu:24.04"\nmounts = ["{mount}"]\n')
    report = check_edf("h", env)
    assert report.ok  # a warning, not an error
    assert "mounts all of $HOME" in one(report, "warning", "mounts[0]")


def test_home_written_unexpanded_is_an_error_and_a_home_warning(tmp_path, env):
    write(edf_dir(env), "h.toml", 'image = "ubuntu:24.04"\nmounts = ["~:/home", "$HOME:/h"]\n')
    report = check_edf("h", env)
    for field in ("mounts[0]", "mounts[1]"):
        assert any("mounts all of $HOME" in m for f, m in warnings(report) if f == field)
        assert any(f == field for f, _ in errors(report))  # not absolute: CE refuses it anyway


def test_subdirectories_of_home_are_fine(tmp_path, env):
    mounts = '["${HOME}/project:/project", "/users/alice/data:/data", "/users/alicex:/x", "/users:/users"]'
    write(edf_dir(env), "h.toml", f'image = "ubuntu:24.04"\nmounts = {mounts}\n')
    report = check_edf("h", env)
    assert report.ok and not [m for _, m in warnings(report) if "$HOME" in m]


def test_the_passwd_home_of_the_user_counts_too(tmp_path, env):
    import pwd

    me = pwd.getpwuid(os.getuid())
    write(edf_dir(env), "h.toml", f'image = "ubuntu:24.04"\nmounts = ["{me.pw_dir}:/home"]\n')
    report = check_edf("h", {**env, "USER": me.pw_name})
    assert "mounts all of $HOME" in one(report, "warning", "mounts[0]")
