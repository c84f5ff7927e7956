"""`cordee edf check | render | run` through the real CLI (python -m cordee in a subprocess):
exit codes, output lines, the cordee.edfcheck/1 JSON, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cordee.edf.load import check_edf

ROOT = Path(__file__).resolve().parents[1]


def cordee(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cordee", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def env(tmp_path):
    (tmp_path / "edf").mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("EDF_", "CORDEE_"))}
    return {**environ, "EDF_PATH": str(tmp_path / "edf"), "SCRATCH": "/capstor/scratch/cscs/alice"}


def edf(env, name: str, text: str) -> Path:
    path = Path(env["EDF_PATH"]) / f"{name}.toml"
    path.write_text(text)
    return path


def assert_one_line_error(cp: subprocess.CompletedProcess, *needles: str) -> None:
    assert cp.returncode == 2, cp.stderr
    assert "Traceback" not in cp.stderr and len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    for needle in needles:
        assert needle in cp.stderr


# --- check -----------------------------------------------------------------------------------------


def test_check_ok_exit_0(env):
    path = edf(env, "good", 'image = "nvcr.io#nvidia/pytorch:25.06-py3"\nmounts = ["${SCRATCH}:/scratch"]\n')
    cp = cordee("edf", "check", "good", env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout == f"{path}: ok\n"


def test_check_warnings_exit_1(env):
    path = edf(env, "warn", 'image = "ubuntu"\n[annotations]\ncom.example.thing = "1"\n')
    cp = cordee("edf", "check", str(path), env=env)
    assert cp.returncode == 1
    assert cp.stdout.splitlines() == [
        f"{path}: annotations.com.example.thing: warning: unknown annotation: no hook documented by CSCS "
        "reads it (typo?)",
        f"{path}: 0 errors, 1 warning",
    ]


def test_check_errors_exit_2_name_file_and_field(env):
    edf(env, "base", 'image = "ubuntu"\nmounts = ["/a:relative"]\n')
    top = edf(env, "top", 'base_environment = "base"\nwritable = "yes"\nworkdir = "${NOPE}"\n')
    cp = cordee("edf", "check", "top", env=env)
    assert cp.returncode == 2
    lines = cp.stdout.splitlines()
    base = Path(env["EDF_PATH"]) / "base.toml"
    assert (
        f"{base}: mounts[0]: error: destination 'relative' must be an absolute path inside the container"
        in lines
    )
    assert f"{top}: writable: error: must be a boolean (true or false, without quotes), not a string" in lines
    assert any(line.startswith(f"{top}: workdir: error: undefined variable NOPE") for line in lines)
    assert lines[-1] == f"{top}: 3 errors, 0 warnings"


def test_check_json(env, tmp_path):
    edf(env, "base", 'image = "ubuntu:24.04"\n[env]\nA = "1"\n')
    top = edf(env, "top", 'base_environment = "base"\nmounts = ["/a:/b:ro"]\n[annotations]\nx.y = "z"\n')
    cp = cordee("edf", "check", "top", "--json", env=env)
    assert cp.returncode == 1
    doc = json.loads(cp.stdout)
    assert doc["schema"] == "cordee.edfcheck/1"
    assert (doc["path"], doc["ok"], doc["errors"], doc["warnings"]) == (str(top), True, 0, 1)
    assert doc["findings"] == [
        {"file": str(top), "field": "annotations.x.y", "severity": "warning",
         "message": "unknown annotation: no hook documented by CSCS reads it (typo?)"}
    ]  # fmt: skip
    resolved = doc["edf"]
    assert resolved["image"] == "ubuntu:24.04" and resolved["env"] == {"A": "1"}
    assert resolved["mounts"] == [{"src": "/a", "dst": "/b", "flags": ["ro"]}]
    assert resolved["chain"] == [str(Path(env["EDF_PATH"]) / "base.toml"), str(top)]
    assert (resolved["entrypoint"], resolved["writable"], resolved["workdir"]) == (True, True, None)
    assert resolved == json.loads(json.dumps(resolved))  # plain JSON types only

    bad = edf(env, "bad", "image = \n")
    doc = json.loads(cordee("edf", "check", str(bad), "--json", env=env).stdout)
    assert doc["ok"] is False and doc["edf"] is None and doc["findings"][0]["field"] == "toml"
    assert "line 1" in doc["findings"][0]["message"]


def test_check_not_found_and_usage_errors(env, tmp_path):
    assert_one_line_error(
        cordee("edf", "check", "nothere", env=env), "EDF 'nothere' not found", env["EDF_PATH"]
    )
    assert_one_line_error(cordee("edf", "check", "./nothere.toml", env=env, cwd=tmp_path), "not found")
    assert_one_line_error(cordee("edf", "check", env=env), "FILE_OR_NAME")
    assert_one_line_error(cordee("edf", "frobnicate", env=env), "frobnicate")


def test_check_relative_path_from_working_directory(env, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "e.toml").write_text('image = "ubuntu"\n')
    cp = cordee("edf", "check", "./proj/e.toml", env=env, cwd=tmp_path)
    assert cp.returncode == 0 and cp.stdout == f"{tmp_path / 'proj' / 'e.toml'}: ok\n"


# --- run -------------------------------------------------------------------------------------------


def test_run_without_cmd_is_a_usage_error(env):
    edf(env, "good", 'image = "ubuntu"\n')
    assert_one_line_error(cordee("edf", "run", "good", env=env), "missing CMD")
    assert_one_line_error(cordee("edf", "run", "good", "--", env=env), "missing CMD")
    assert_one_line_error(cordee("edf", "run", "--timeout", "-1", "good", "--", "true", env=env), "--timeout")


def test_run_stops_at_the_first_edf_error(env):
    path = edf(env, "bad", 'image = "ubuntu"\nmounts = ["relative:/x"]\nwritable = 0\n')
    cp = cordee("edf", "run", "bad", "--", "true", env=env)
    assert_one_line_error(cp, f"{path}: mounts[0]: source 'relative'", "and 1 more: cordee edf check bad")
    assert_one_line_error(cordee("edf", "run", "nothere", "--", "true", env=env), "EDF 'nothere' not found")


@pytest.mark.parametrize(
    "argv, timeout, cmd, host_env",
    [
        (["good", "--", "echo", "hi"], None, ["echo", "hi"], True),
        (["--timeout", "30", "good", "--", "echo", "--json"], 30.0, ["echo", "--json"], True),
        (["good", "--timeout", "2.5", "--", "sh", "-c", "exit 3"], 2.5, ["sh", "-c", "exit 3"], True),
        (["good", "--", "a", "--", "b"], None, ["a", "--", "b"], True),
        (["good", "--", "--weird"], None, ["--weird"], True),
        (["good", "ls", "-l"], None, ["ls", "-l"], True),
        (["--no-host-env", "good", "--", "env"], None, ["env"], False),
        (["good", "--no-host-env", "--timeout", "4", "--", "env"], 4.0, ["env"], False),
    ],
)
def test_run_passes_the_resolved_edf_and_cmd(env, monkeypatch, argv, timeout, cmd, host_env):
    """The CLI's own part: argument handling and load_edf; run_edf (podman) is tested in test_edf_run."""
    from cordee.cli import main
    from cordee.edf import run as edfrun

    path = edf(env, "good", 'image = "ubuntu:24.04"\nworkdir = "/w"\n')
    calls = []

    def fake_run_edf(resolved, command, *, environ, timeout, host_env):
        calls.append((resolved, command, timeout, host_env))
        return 7

    monkeypatch.setattr(edfrun, "run_edf", fake_run_edf)
    monkeypatch.setenv("EDF_PATH", env["EDF_PATH"])
    with pytest.raises(SystemExit) as e:
        main(["edf", "run", *argv])
    assert e.value.code == 7
    (resolved, command, got_timeout, got_host_env), = calls  # fmt: skip
    assert (resolved.path, resolved.image, resolved.workdir) == (str(path), "ubuntu:24.04", "/w")
    assert (command, got_timeout, got_host_env) == (cmd, timeout, host_env)


# --- render ----------------------------------------------------------------------------------------


def container_specs() -> list[str]:
    from cordee.images.spec import find_root, list_specs, load_spec

    root = find_root(ROOT)
    return [n for n in list_specs(root) if load_spec(n, root).kind == "container"]


def test_render_every_container_spec_passes_check(env, tmp_path):
    names = container_specs()
    assert names, "no container specs under images/"
    for name in names:
        cp = cordee("edf", "render", name, env=env, cwd=ROOT)
        assert cp.returncode == 0, cp.stderr
        path = tmp_path / f"{name}.toml"
        path.write_text(cp.stdout)
        report = check_edf(str(path), env)
        assert report.ok, [f for f in report.findings if f.severity == "error"]
        assert report.edf.image == str(ROOT / "build" / name / f"{name}.sqsh")
        # the image does not exist before a build: that is the only kind of warning allowed here
        assert {f.field for f in report.findings} <= {"image"}, report.findings


def test_render_sqsh_and_out(env, tmp_path):
    name = container_specs()[0]
    (tmp_path / "imgs").mkdir()
    out = tmp_path / "out" / f"{name}.toml"
    out.parent.mkdir()
    cp = cordee("edf", "render", name, "--sqsh", "imgs/x.sqsh", "--out", str(out), env=env, cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert tomllib.loads(out.read_text())["image"] == str(tmp_path / "imgs" / "x.sqsh")
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind
    printed = cordee("edf", "render", name, "--sqsh", str(tmp_path / "imgs" / "x.sqsh"), env=env, cwd=ROOT)
    assert printed.stdout == out.read_text()


def test_render_errors(env, tmp_path):
    assert_one_line_error(cordee("edf", "render", "no-such-spec", env=env, cwd=ROOT), "no-such-spec")
    name = container_specs()[0]
    cp = cordee("edf", "render", name, "--out", str(tmp_path / "missing-dir" / "x.toml"), env=env, cwd=ROOT)
    assert_one_line_error(cp, "--out", "missing-dir")
