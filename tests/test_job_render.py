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


# --- the checkpoint interval: --save-every, or Daly's from the trainer's metrics --------------------


def metrics_file(path: Path, costs: list[float], step_time: float = 0.5) -> Path:
    """A metrics file as the trainer writes it (cordee.train.metrics.step_record + checkpoint_s)."""
    import json

    from cordee.train.metrics import step_record

    lines = []
    for step, cost in enumerate(costs, 1):
        record = step_record(step=step, loss=2.0, lr=1e-3, grad_norm=1.0, tokens=4096, step_time_s=step_time,
                             world_size=8, flops_per_token=1e9, peak_tflops=None, device="cpu")  # fmt: skip
        lines.append(json.dumps({**record, "time": 0.0, "checkpoint_s": cost}))
    path.write_text("\n".join(lines) + "\n")
    return path


def comment(script: str) -> str:
    (line,) = [line for line in script.splitlines() if line.startswith("# Checkpoints: ")]
    return line


def test_save_every_is_rendered_as_the_interval():
    r = cli(*BASE, "--config", "1b", "--save-every", "250")
    assert r.returncode == 0, r.stderr
    assert srun_words(r.stdout)[-1] == "checkpoint.interval=250"
    assert comment(r.stdout) == "# Checkpoints: checkpoint.interval=250 from --save-every"


def test_interval_from_the_metrics_is_dalys(tmp_path):
    from cordee.storage.interval import daly_interval

    costs = [0.0, 0.0, 0.0, 12.0, 0.0, 0.0, 10.0, 0.0, 0.0, 30.0, 0.0]  # median of the saves: 12 s
    path = metrics_file(tmp_path / "metrics.jsonl", costs, step_time=0.5)
    r = cli(*BASE, "--config", "1b", "--metrics", str(path), "--node-mtbf", "2000")
    assert r.returncode == 0, r.stderr
    expected = round(daly_interval(12.0, 2000 * 3600 / 2) / 0.5)  # BASE has 2 nodes
    assert srun_words(r.stdout)[-1] == f"checkpoint.interval={expected}"
    note = comment(r.stdout)
    assert f"checkpoint.interval={expected} steps = Daly's interval" in note
    assert "checkpoint cost 12 s (median of 3 saves in" in note and "step time 0.5 s" in note
    assert "node MTBF 2000 h / 2 nodes" in note and "Daly, FGCS 22(3), 2006" in note
    check_script = tmp_path / "job.sh"
    check_script.write_text(r.stdout)
    check_shell(check_script, severity="error")


def test_given_cost_and_step_time_override_the_measured_ones(tmp_path):
    from cordee.storage.interval import daly_interval

    path = metrics_file(tmp_path / "m.jsonl", [0.0, 5.0, 0.0])
    r = cli(*BASE, "--config", "1b", "--metrics", str(path), "--ckpt-cost", "60", "--mtbf", "10")
    assert srun_words(r.stdout)[-1] == f"checkpoint.interval={round(daly_interval(60.0, 36000.0) / 0.5)}"
    r = cli(*BASE, "--config", "1b", "--ckpt-cost", "60", "--step-time", "2", "--mtbf", "10")
    assert srun_words(r.stdout)[-1] == f"checkpoint.interval={round(daly_interval(60.0, 36000.0) / 2)}"
    assert "--ckpt-cost 60 s, --step-time 2 s, MTBF 10 h" in comment(r.stdout)


def test_a_hostile_metrics_path_stays_inside_the_comment(tmp_path):
    path = metrics_file(tmp_path / "m\n$(id).jsonl", [0.0, 5.0])
    r = cli(*BASE, "--config", "1b", "--metrics", str(path), "--mtbf", "10")
    assert r.returncode == 0, r.stderr
    assert "\\n$(id).jsonl" in comment(r.stdout) and not any(
        line.startswith("$(id)") for line in r.stdout.splitlines())  # fmt: skip


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--metrics", "{nockpt}", "--mtbf", "5"], "no checkpoint records"),
        (["--metrics", "{missing}", "--mtbf", "5"], "--metrics"),
        (["--metrics", "{dir}", "--mtbf", "5"], "directory"),
        (["--metrics", "{good}"], "needs the MTBF"),
        (["--metrics", "{good}", "--mtbf", "5", "--node-mtbf", "5"], "needs the MTBF"),
        (["--ckpt-cost", "5", "--mtbf", "5"], "--step-time"),
        (["--save-every", "10", "--metrics", "{good}", "--mtbf", "5"], "--save-every sets the interval"),
        (["--save-every", "0"], "--save-every"),
        (["--save-every", "10", "--set", "checkpoint.interval=5"], "give one"),
        (["--mtbf", "nan", "--metrics", "{good}"], "--mtbf"),
        (["--ckpt-cost", "1e400", "--step-time", "1", "--mtbf", "5"], "--ckpt-cost"),
    ],
)
def test_bad_interval_input_exits_2_with_one_line(tmp_path, args, fragment):
    paths = {
        "nockpt": metrics_file(tmp_path / "n.jsonl", [0.0, 0.0]),
        "good": metrics_file(tmp_path / "g.jsonl", [3.0]),
        "missing": tmp_path / "none.jsonl", "dir": tmp_path,
    }  # fmt: skip
    r = cli(*BASE, "--config", "1b", *(a.format(**paths) for a in args))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr


def test_interval_with_command_is_refused(tmp_path):
    r = cli(*BASE, "--command", "python x.py", "--save-every", "5")
    assert r.returncode == 2 and "does not apply" in r.stderr
