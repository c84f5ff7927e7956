"""`cordee job render`: the sbatch script parses (bash -n, shellcheck), holds the promised
directives, quotes every value (parsed back with shlex, and run by bash against recording
stand-ins for srun/sbatch/scancel/scontrol, so the exit-code logic runs for real), and refuses
what cannot be written safely. The chain through the real Slurm is tests/test_job_chain_slurm.py."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cordee.errors import InputError
from cordee.train.jobrender import JobOptions, render_job, time_seconds

CORDEE = str(Path(sys.executable).with_name("cordee"))
BASE = ["job", "render", "--name", "run1", "--nodes", "2", "--ntasks-per-node", "4", "--time", "04:00:00"]
HOSTILE = [
    "$(touch /tmp/cordee-pwned)", "`id`", "a b", "it's", 'say "hi"', "x;y", "*", "~root", "-n", "$HOME",
    "\\", "é", "--flag=$(id)",
]  # fmt: skip


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([CORDEE, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def srun_words(script: str) -> list[str]:
    (line,) = [line for line in script.splitlines() if line.startswith("srun ")]
    return shlex.split(line)


def check_shell(path: Path, severity: str = "style") -> None:
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/install-system-deps.sh installs it)")
    argv = ["shellcheck", "-s", "bash", f"--severity={severity}", str(path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("chain", ["singleton", "requeue"])
def test_script_parses_and_holds_the_directives(tmp_path, chain):
    out = tmp_path / "job.sh"
    r = cli(
        *BASE, "--environment", "ngc-pytorch", "--config", "1b", "--set", "checkpoint.dir=/scratch/ck",
        "--set", "steps=1000", "--chain", chain, "--account", "a-g34", "--partition", "normal",
        "--signal", "USR2", "--signal-before", "300", "--output", "logs/%x-%j.out", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert os.access(out, os.X_OK)
    text = out.read_text()
    check_shell(out)
    expected = [
        "--job-name=run1", "--nodes=2", "--ntasks-per-node=4", "--time=04:00:00", "--signal=USR2@300",
        "--account=a-g34", "--partition=normal", "--output=logs/%x-%j.out",
    ]  # fmt: skip
    requeue = ["--requeue", "--open-mode=append"] if chain == "requeue" else []
    assert directives(text) == expected + requeue
    assert srun_words(text) == [
        "srun", "--kill-on-bad-exit=1", "--environment=ngc-pytorch", "cordee", "launch", "--",
        "cordee", "train", "--config", "1b", "checkpoint.dir=/scratch/ck", "steps=1000",
    ]  # fmt: skip
    assert ("--dependency=singleton" in text) == (chain == "singleton")
    assert ('scontrol requeue "$SLURM_JOB_ID"' in text) == (chain == "requeue")


def test_without_environment_srun_is_plain_and_stdout_is_the_default():
    r = cli(*BASE, "--config", "tiny")
    assert r.returncode == 0, r.stderr
    assert srun_words(r.stdout)[:4] == ["srun", "--kill-on-bad-exit=1", "cordee", "launch"]
    assert "--environment" not in r.stdout and "--account" not in r.stdout


def test_hostile_values_are_quoted_and_reach_srun_unchanged(tmp_path):
    opts = JobOptions(
        name="run1", nodes=1, ntasks_per_node=1, time="00:10:00", environment=HOSTILE[0],
        config=" ".join(HOSTILE), overrides=tuple(f"k{i}={v}" for i, v in enumerate(HOSTILE)),
        state_dir=str(tmp_path / "state $(id) 'q'"),
    )  # fmt: skip
    script = tmp_path / "job.sh"
    script.write_text(render_job(opts))
    # "info" notes that $(...) in single quotes does not expand: literal is the point here
    check_shell(script, severity="warning")
    words = srun_words(script.read_text())
    assert words[2] == f"--environment={HOSTILE[0]}"
    assert words[8:] == ["--config", " ".join(HOSTILE), *opts.overrides]
    run = run_script(tmp_path, script, srun_rc=0)
    assert run.srun_args == words[1:]  # bash itself hands srun exactly these words
    assert not Path("/tmp/cordee-pwned").exists()
    assert (Path(opts.state_dir) / "run1.failures").read_text() == "0\n"


# -- the chain logic run by bash, Slurm's commands replaced by recorders

RECORDER = """#!/bin/bash
printf '%s\\0' "$@" > "$RECORD_DIR/$(basename "$0").args"
if [[ $(basename "$0") == srun ]]; then exit "${SRUN_RC:-0}"; fi
if [[ $(basename "$0") == sbatch ]]; then echo "4242;cluster"; fi
"""


class Run:
    def __init__(self, record: Path, proc: subprocess.CompletedProcess) -> None:
        self.record, self.rc, self.log = record, proc.returncode, proc.stderr

    def args(self, tool: str) -> list[str] | None:
        path = self.record / f"{tool}.args"
        return path.read_text().split("\0")[:-1] if path.exists() else None

    @property
    def srun_args(self) -> list[str] | None:
        return self.args("srun")


def run_script(tmp_path: Path, script: Path, srun_rc: int, **env: str) -> Run:
    bindir, record = tmp_path / "bin", tmp_path / "record"
    for d in (bindir, record):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    for tool in ("srun", "sbatch", "scancel", "scontrol"):
        (bindir / tool).write_text(RECORDER)
        (bindir / tool).chmod(0o755)
    environ = {
        "PATH": f"{bindir}:/usr/bin:/bin", "RECORD_DIR": str(record), "SRUN_RC": str(srun_rc),
        "SLURM_JOB_ID": "4100", "SLURM_JOB_NAME": "run1", **env,
    }  # fmt: skip
    proc = subprocess.run(["bash", str(script)], env=environ, cwd=tmp_path, capture_output=True, text=True)
    return Run(record, proc)


def chain_script(tmp_path: Path, chain: str) -> Path:
    opts = JobOptions(
        name="run1", nodes=1, ntasks_per_node=1, time="00:10:00", command=("train",), chain=chain,
        max_failures=2,
    )  # fmt: skip
    script = tmp_path / f"{chain}.sh"
    script.write_text(render_job(opts))
    return script


def failures(tmp_path: Path) -> str:
    return (tmp_path / ".cordee-job" / "run1.failures").read_text()


def test_singleton_chain_logic(tmp_path):
    script = chain_script(tmp_path, "singleton")
    run = run_script(tmp_path, script, srun_rc=75)  # stopped by the signal: successor kept
    assert run.rc == 75 and run.args("scancel") is None and failures(tmp_path) == "0\n"
    successor = ["--dependency=singleton", "--job-name=run1", "--export=ALL,CORDEE_JOB_LINK=2", str(script)]
    assert run.args("sbatch") == ["--parsable", *successor]
    run = run_script(tmp_path, script, srun_rc=1, CORDEE_JOB_LINK="2")  # failure 1 of 2: kept
    assert run.rc == 1 and run.args("scancel") is None and failures(tmp_path) == "1\n"
    assert "1 of 2 in a row: the chain continues" in run.log
    run = run_script(tmp_path, script, srun_rc=137, CORDEE_JOB_LINK="3")  # failure 2 of 2: cancelled
    assert run.rc == 137 and run.args("scancel") == ["4242"] and failures(tmp_path) == "2\n"
    assert "2 times in a row: the chain stops" in run.log
    run = run_script(tmp_path, script, srun_rc=5)  # a new chain (link 1) counts afresh: 1 of 2
    assert run.rc == 5 and run.args("scancel") is None and failures(tmp_path) == "1\n"
    run = run_script(tmp_path, script, srun_rc=0, CORDEE_JOB_LINK="2")  # finished: cancelled
    assert run.rc == 0 and run.args("scancel") == ["4242"] and failures(tmp_path) == "0\n"
    assert "training finished: the chain ends" in run.log


def test_requeue_chain_logic(tmp_path):
    script = chain_script(tmp_path, "requeue")
    run = run_script(tmp_path, script, srun_rc=75)
    assert run.args("scontrol") == ["requeue", "4100"] and failures(tmp_path) == "0\n"
    assert run.args("sbatch") is None
    run = run_script(tmp_path, script, srun_rc=2, SLURM_RESTART_COUNT="1")
    assert run.args("scontrol") == ["requeue", "4100"] and failures(tmp_path) == "1\n"
    run = run_script(tmp_path, script, srun_rc=2, SLURM_RESTART_COUNT="2")
    assert run.args("scontrol") is None and failures(tmp_path) == "2\n"
    run = run_script(tmp_path, script, srun_rc=0, SLURM_RESTART_COUNT="3")
    assert run.rc == 0 and run.args("scontrol") is None and failures(tmp_path) == "0\n"


# -- refused


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--name", "a b"], "--name 'a b'"),
        (["--name", "x\n#SBATCH --uid=0"], "--name"),
        (["--account", "acc\n#SBATCH --x"], "--account"),
        (["--partition", "p q"], "--partition"),
        (["--output", "out file"], "--output"),
        (["--time", "4h"], "--time '4h'"),
        (["--time", "00:00:30"], "at least 00:01:00"),
        (["--time", "00:01:00", "--signal-before", "60"], "--signal-before 60"),
        (["--signal", "SIGKILL"], "stop signal 'SIGKILL'"),
        (["--set", "novalue"], "--set 'novalue'"),
        (["--set", "a..b=1"], "--set"),
        (["--config", "x\ny"], "--config"),
        (["--environment", "e\tf"], "--environment"),
        (["--command", "a 'b"], "--command"),
        (["--command", "x", "--config", "1b"], "--command replaces"),
        ([], "--config is required"),
        (["--chain", "both"], "--chain"),
        (["--nodes", "0"], "--nodes"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, fragment):
    base = [a for a in BASE if a not in ("--name", "run1")] if "--name" in args else BASE
    if "--nodes" in args:
        base = [*BASE[:4], *BASE[6:]]
    has_program = "--config" in args or "--command" in args or "--config is" in fragment
    extra = [] if has_program else ["--config", "1b"]
    r = cli(*base, *extra, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert r.stdout == ""


def test_time_formats():
    assert time_seconds("04:00:00") == 14400 and time_seconds("1-00:00:01") == 86401
    for bad in ("4:00", "00:60:00", "1-2", "", "04:00:00\n"):
        with pytest.raises(InputError):
            time_seconds(bad)
