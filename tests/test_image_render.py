"""Rendering: every spec renders; Containerfiles parse (dockerfile-parse) to the intended instructions;
EDFs parse (tomllib) to the intended values; output is byte-identical across runs and processes;
the build scripts pass shellcheck and really refuse a wrong checksum or commit."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from cordee import __version__, profiles
from cordee.edf.layer import flatten
from cordee.edf.load import check_edf
from cordee.images.render import content_key, render_edf, render_image
from cordee.images.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPECS = ["cpu-ci", "pytorch-cuda-gh200", "pytorch-ngc-gh200", "pytorch-uenv-gh200"]
CONTAINERS = [s for s in SPECS if "uenv" not in s]
SCRIPTS = sorted((REPO / "recipes/containerfile/scripts").glob("*.sh"))


def instructions(containerfile: Path) -> list[dict]:
    with containerfile.open("rb") as f:
        parsed = DockerfileParser(fileobj=f).structure
    return [i for i in parsed if i["instruction"] != "COMMENT"]


def runs(parsed: list[dict]) -> list[list[str]]:
    return [shlex.split(i["value"]) for i in parsed if i["instruction"] == "RUN"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "images", tmp_path / "images")
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return tmp_path


def variant(root: Path, base: str, name: str, change) -> str:
    data = yaml.safe_load((REPO / "images" / f"{base}.yaml").read_text())
    change(data)
    (root / "images" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return name


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_renders_with_a_complete_build_plan(name: str, tmp_path: Path):
    spec = load_spec(name, REPO)
    rendered = render_image(spec, tmp_path / name)
    plan = json.loads((tmp_path / name / "build.json").read_text())
    assert plan == rendered.plan and rendered.files == sorted(rendered.files) == plan["files"]
    assert all((tmp_path / name / f).is_file() for f in rendered.files)
    assert plan["schema"] == "cordee.buildplan/1" and plan["name"] == name and plan["kind"] == spec.kind
    assert plan["spec_hash"] == rendered.spec_hash == spec.spec_hash
    assert plan["content_key"] == rendered.content_key == content_key(spec)
    assert plan["sqsh"] == str((tmp_path / name).resolve() / f"{name}.sqsh")
    assert set(plan) >= {"tag", "base", "wheelhouse", "platform", "edf", "build_network"}
    if spec.kind == "container":
        assert plan["tag"] == f"localhost/cordee/{name}:{rendered.content_key[:12]}"
        assert plan["edf"] == f"{name}.toml" and "Containerfile" in rendered.files
    else:
        assert plan["tag"] is None and plan["edf"] is None and plan["uenv"]["recipe"] == "uenv"


@pytest.mark.parametrize("name", CONTAINERS)
def test_containerfile_instructions_are_the_intended_ones(name: str, tmp_path: Path):
    spec = load_spec(name, REPO)
    rendered = render_image(spec, tmp_path)
    parsed = instructions(tmp_path / "Containerfile")
    base = rendered.plan["base"]
    assert parsed[0]["instruction"] == "FROM" and [i["instruction"] for i in parsed].count("FROM") == 1
    assert parsed[0]["value"] == (base["tag"] if base["kind"] == "debootstrap" else base["ref"])
    with (tmp_path / "Containerfile").open("rb") as f:
        dfp = DockerfileParser(fileobj=f)
        envs, labels = dfp.envs, dfp.labels
    profile_env = profiles.load(spec.data["fabric_profile"]).as_env()
    for key, value in {**profile_env, **spec.data["env"]}.items():
        assert envs[key] == value, key
    assert labels["org.cordee.spec-hash"] == spec.spec_hash
    assert labels["org.cordee.version"] == __version__
    assert labels["org.cordee.content-key"] == rendered.content_key
    assert labels["org.opencontainers.image.description"] == spec.data["description"]
    paths = [i["value"] for i in parsed if i["instruction"] == "ENV" and i["value"].startswith("PATH=")]
    venv = spec.data["python"]["venv"]
    if venv:
        assert f"PATH='{venv}/bin':$PATH" in paths
    # cordee is installed and started in every image
    assert any(
        cmd[-2:] == ["cordee", "--version"] or cmd[-2:] == [f"{venv}/bin/cordee", "--version"]
        for run in runs(parsed)
        for cmd in _split_and(run)
    )


def _split_and(words: list[str]) -> list[list[str]]:
    commands, current = [], []
    for w in words:
        if w == "&&":
            commands.append(current)
            current = []
        else:
            current.append(w)
    return [*commands, current]


def test_cpu_ci_builds_offline_from_the_wheelhouse(tmp_path: Path):
    spec = load_spec("cpu-ci", REPO)
    rendered = render_image(spec, tmp_path)
    plan = rendered.plan
    assert plan["build_network"] is False and plan["platform"] is None
    assert plan["wheelhouse"] == {"requirements": ["torch==2.13.0"], "cordee": True}
    boot = spec.data["base"]["debootstrap"]
    core = {
        "kind": "debootstrap",
        "suite": "bookworm",
        "variant": "minbase",
        "include": sorted(boot["include"]),
    }
    digest = hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert plan["base"] == {**core, "tag": f"localhost/cordee/base-bookworm:{digest[:12]}"}
    parsed = instructions(tmp_path / "Containerfile")
    assert [i["value"] for i in parsed if i["instruction"] == "COPY"] == ["wheels/ /tmp/cordee-wheels/"]
    assert _split_and(runs(parsed)[0]) == [
        ["python3", "-m", "venv", "/opt/cordee"],
        [
            "/opt/cordee/bin/python",
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            "/tmp/cordee-wheels",
            "torch==2.13.0",
            f"cordee=={__version__}",
        ],
        ["rm", "-rf", "/tmp/cordee-wheels"],
        ["/opt/cordee/bin/cordee", "--version"],
    ]
    assert len(runs(parsed)) == 1  # nothing else runs, nothing needs the network


def test_builtin_stack_builds_pinned_sources_in_order(tmp_path: Path):
    spec = load_spec("pytorch-cuda-gh200", REPO)
    rendered = render_image(spec, tmp_path)
    assert rendered.plan["build_network"] is True and rendered.plan["platform"] == "linux/arm64"
    order = ["cassini-headers", "cxi-driver", "libcxi", "libfabric", "aws-ofi-nccl", "nccl-tests"]
    fetched = []
    for run in runs(instructions(tmp_path / "Containerfile")):
        commands = _split_and(run)
        if commands[0][:2] == ["sh", "/tmp/cordee-build/fetch-tarball.sh"]:
            _, _, dest, url, sha = commands[0]
            source = spec.data["sources"][dest.rsplit("/", 1)[1]]
            assert (url, sha) == (source["url"], source["sha256"])
            fetched.append(dest.rsplit("/", 1)[1])
        elif commands[0][:2] == ["sh", "/tmp/cordee-build/fetch-git.sh"]:
            _, _, dest, git, commit = commands[0]
            source = spec.data["sources"][dest.rsplit("/", 1)[1]]
            assert (git, commit) == (source["git"], source["commit"])
            fetched.append(dest.rsplit("/", 1)[1])
        else:
            continue
        component = fetched[-1]
        assert commands[1] == [
            "sh",
            f"/tmp/cordee-build/build-{component}.sh",
            f"/tmp/cordee-src/{component}",
            "/opt/cordee-net",
            "/usr/local/cuda",
            "90",
        ]
    assert fetched == order
    assert {f"scripts/{p.name}" for p in SCRIPTS} <= set(rendered.files)
    edf = dict(flatten(tomllib.loads((tmp_path / "pytorch-cuda-gh200.toml").read_text())))
    assert not any(k.startswith("annotations.") for k in edf)  # no CE hook over the built-in stack


def test_one_field_switches_ngc_between_hook_and_builtin(root: Path, tmp_path: Path):
    hook = render_image(load_spec("pytorch-ngc-gh200", root), tmp_path / "hook")
    name = variant(root, "pytorch-ngc-gh200", "ngc-builtin", lambda d: d["network"].update(stack="builtin"))
    builtin = render_image(load_spec(name, root), tmp_path / "builtin")
    edf_hook = dict(flatten(tomllib.loads((tmp_path / "hook/pytorch-ngc-gh200.toml").read_text())))
    edf_builtin = dict(flatten(tomllib.loads((tmp_path / "builtin/ngc-builtin.toml").read_text())))
    assert edf_hook["annotations.com.hooks.aws_ofi_nccl.enabled"] == "true"
    assert edf_hook["annotations.com.hooks.aws_ofi_nccl.variant"] == "cuda12"
    assert edf_hook["annotations.com.hooks.cxi.enabled"] == "true"
    assert not any(k.startswith("annotations.com.hooks") for k in edf_builtin)

    def fetched(folder: Path) -> list[str]:
        return [r[2] for r in runs(instructions(folder / "Containerfile")) if "fetch" in " ".join(r[:2])]

    assert fetched(tmp_path / "hook") == ["/tmp/cordee-src/nccl-tests"]
    assert len(fetched(tmp_path / "builtin")) == 6
    assert hook.plan["build_network"] and builtin.plan["build_network"]


def test_cuda_dl_variant_adds_the_unversioned_cudart_link(root: Path, tmp_path: Path):
    name = variant(root, "pytorch-ngc-gh200", "ngc-dl", lambda d: d["network"].update(variant="cuda-dl"))
    rendered = render_image(load_spec(name, root), tmp_path)
    run = [
        r
        for r in runs(instructions(tmp_path / "Containerfile"))
        if r[:2] == ["sh", "/tmp/cordee-cudart-link.sh"]
    ]
    assert run == [
        [
            "sh",
            "/tmp/cordee-cudart-link.sh",
            "/usr/local/cuda/lib64",
            "&&",
            "rm",
            "-f",
            "/tmp/cordee-cudart-link.sh",
        ]
    ]
    assert "scripts/cudart-link.sh" in rendered.files


@pytest.mark.parametrize("name", CONTAINERS)
def test_edf_is_the_intended_toml(name: str, tmp_path: Path):
    spec = load_spec(name, REPO)
    sqsh = tmp_path / "x" / f"{name}.sqsh"
    edf = tomllib.loads(render_edf(spec, sqsh))
    profile_env = profiles.load(spec.data["fabric_profile"]).as_env()
    assert edf["image"] == str(sqsh) and edf["env"] == {**profile_env, **spec.data["env"]}
    assert set(edf) <= {"image", "workdir", "entrypoint", "writable", "mounts", "env", "annotations"}
    assert (
        edf["mounts"] == spec.data["edf"]["mounts"] and edf["writable"] is True and edf["entrypoint"] is False
    )
    assert render_edf(spec, str(sqsh)) == render_edf(spec, sqsh)


def test_edf_check_accepts_rendered_edfs(tmp_path: Path):
    for name in CONTAINERS:
        path = tmp_path / f"{name}.toml"
        path.write_text(render_edf(load_spec(name, REPO), tmp_path / f"{name}.sqsh"))
        report = check_edf(str(path), {"HOME": str(tmp_path)})
        assert not [f for f in report.findings if f.severity == "error"], report.findings


BROKEN_RECIPES = {
    "template missing": ("cpu-ci", "edf/edf.toml.j2", None, "cannot read this recipe file"),
    "package.py missing": (
        "pytorch-uenv-gh200",
        "uenv/repo/packages/py-cordee/package.py",
        None,
        "cannot read this recipe file",
    ),
    "template syntax": ("cpu-ci", "edf/edf.toml.j2", b"{% if %}\n", "template error: Expected an expression"),
    "template not UTF-8": ("cpu-ci", "containerfile/Containerfile.j2", b"\xff\n", "template error: 'utf-8'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RECIPES))
def test_a_broken_recipes_folder_is_one_clear_error(root: Path, tmp_path: Path, case: str):
    """A recipes/ folder next to a spec that lacks a file or holds a bad template: exit 2 and one
    line naming the file, from `image render` (content key first) and `edf render` alike."""
    name, rel, text, expected = BROKEN_RECIPES[case]
    if text is None:
        (root / "recipes" / rel).unlink()
    else:
        (root / "recipes" / rel).write_bytes(text)
    commands = [["image", "render", name, "--out", str(tmp_path / "out")]]
    if rel.startswith("edf/"):
        commands.append(["edf", "render", name])
    env = {k: v for k, v in os.environ.items() if k != "CORDEE_ROOT"}
    for args in commands:
        result = subprocess.run(
            [sys.executable, "-m", "cordee", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert lines[0].startswith(f"cordee: error: {root / 'recipes' / rel}: "), lines[0]
        assert expected in lines[0] or args[0] == "edf", lines[0]  # edf render: Jinja2's own words


def test_uenv_spec_has_no_edf():
    from cordee.images.spec import SpecError

    with pytest.raises(SpecError, match="is a uenv spec; only container specs have an EDF"):
        render_edf(load_spec("pytorch-uenv-gh200", REPO), Path("/x.sqsh"))


def test_rendering_is_byte_identical_across_runs_and_processes(tmp_path: Path):
    sqsh = tmp_path / "same.sqsh"
    script = (
        "import sys; from pathlib import Path; from cordee.images.spec import load_spec; "
        "from cordee.images.render import render_image\n"
        "for n in sys.argv[3:]:\n"
        "    render_image(load_spec(n), Path(sys.argv[1]) / n, sqsh_path=Path(sys.argv[2]))"
    )
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run(
            [sys.executable, "-c", script, str(out), str(sqsh), *SPECS],
            check=True,
            env=env,
            timeout=120,
            cwd=REPO,
        )
        trees.append(
            {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        )
    assert trees[0] == trees[1] and len(trees[0]) > 10
    again = tmp_path / "again"
    for n in SPECS:
        render_image(load_spec(n, REPO), again / n, sqsh_path=sqsh)
    assert {
        p.relative_to(again).as_posix(): p.read_bytes() for p in again.rglob("*") if p.is_file()
    } == trees[0]


def test_rerender_removes_files_it_no_longer_writes(root: Path, tmp_path: Path):
    name = variant(root, "pytorch-ngc-gh200", "ngc", lambda d: d["network"].update(stack="builtin"))
    out = tmp_path / "out"
    (out / "wheels").mkdir(parents=True)
    (out / "wheels" / "kept.whl").write_bytes(b"x")  # the build driver's, never touched
    render_image(load_spec(name, root), out)
    assert (out / "scripts" / "fetch-git.sh").is_file()
    variant(
        root, "pytorch-ngc-gh200", "ngc", lambda d: (d.pop("sources_file"), d["network"].update(stack="hook"))
    )
    rendered = render_image(load_spec(name, root), out)
    assert not (out / "scripts" / "fetch-git.sh").exists() and (out / "wheels" / "kept.whl").is_file()
    assert not any(f.startswith("scripts/") for f in rendered.files)


def test_content_key_follows_templates_spec_and_cordee(root: Path):
    spec = load_spec("cpu-ci", root)
    key = content_key(spec)
    assert content_key(load_spec("cpu-ci", root)) == key
    template = root / "recipes/containerfile/Containerfile.j2"
    template.write_text(template.read_text() + "{# a change #}\n")
    changed_template = content_key(spec)
    assert changed_template != key
    name = variant(root, "cpu-ci", "cpu2", lambda d: d.update(description="another description"))
    assert content_key(load_spec(name, root)) not in (key, changed_template)


def test_uenv_key_ignores_container_templates(root: Path):
    uenv = load_spec("pytorch-uenv-gh200", root)
    key = content_key(uenv)
    template = root / "recipes/containerfile/Containerfile.j2"
    template.write_text(template.read_text() + "{# a change #}\n")
    assert content_key(uenv) == key
    modules = root / "recipes/uenv/modules.yaml.j2"
    modules.write_text(modules.read_text() + "# a change\n")
    assert content_key(uenv) != key


def test_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/install-system-deps.sh installs it)")
    result = subprocess.run(
        ["shellcheck", "-s", "sh", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


def _archive(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "hello.txt").write_text("hello\n")
    archive = tmp_path / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "pkg", arcname="pkg-1.0")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_fetch_tarball_checks_the_sha256(tmp_path: Path):
    archive, sha = _archive(tmp_path)
    script = REPO / "recipes/containerfile/scripts/fetch-tarball.sh"
    ok = subprocess.run(
        ["sh", str(script), str(tmp_path / "good"), archive.as_uri(), sha],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "good" / "hello.txt").read_text() == "hello\n"
    bad = subprocess.run(
        ["sh", str(script), str(tmp_path / "bad"), archive.as_uri(), "0" * 64],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "FAILED" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad" / "hello.txt").exists()  # nothing unpacked from an unverified download


def test_fetch_git_checks_the_commit(tmp_path: Path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }

    def git(*a):
        return subprocess.run(
            ["git", "-C", str(repo), *a],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        ).stdout.strip()

    repo.mkdir()
    git("init", "-q")
    (repo / "f").write_text("one\n")
    git("add", "f")
    git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD")
    (repo / "f").write_text("two\n")
    git("commit", "-qam", "two")
    script = REPO / "recipes/containerfile/scripts/fetch-git.sh"
    ok = subprocess.run(
        ["sh", str(script), str(tmp_path / "a"), repo.as_uri(), first[:12]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "a" / "f").read_text() == "one\n" and first in ok.stdout
    bad = subprocess.run(
        ["sh", str(script), str(tmp_path / "b"), repo.as_uri(), "0" * 40],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0


def test_cudart_link(tmp_path: Path):
    script = REPO / "recipes/containerfile/scripts/cudart-link.sh"
    lib = tmp_path / "lib64"
    lib.mkdir()
    assert subprocess.run(["sh", str(script), str(lib)], capture_output=True, timeout=30).returncode != 0
    (lib / "libcudart.so.12.9.79").write_bytes(b"")
    (lib / "libcudart.so.12").symlink_to("libcudart.so.12.9.79")
    assert subprocess.run(["sh", str(script), str(lib)], capture_output=True, timeout=30).returncode == 0
    assert os.readlink(lib / "libcudart.so") == "libcudart.so.12"
    assert (
        subprocess.run(["sh", str(script), str(lib)], capture_output=True, timeout=30).returncode == 0
    )  # idempotent


def test_build_scripts_count_only_for_images_that_run_them(root: Path):
    cpu, cuda = load_spec("cpu-ci", root), load_spec("pytorch-cuda-gh200", root)
    keys = content_key(cpu), content_key(cuda)
    script = root / "recipes/containerfile/scripts/build-libfabric.sh"
    script.write_text(script.read_text() + "# a change\n")
    assert content_key(cpu) == keys[0] and content_key(cuda) != keys[1]
