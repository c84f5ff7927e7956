"""`cordee preflight ci-template`: a GitLab CI job that runs the preflight on the cluster through
Slurm and keeps its reports (recipes/ci/gitlab-preflight.yml.j2).

The job runs, from a runner that can call srun (a shell or Jacamar CI runner on a login node):
  srun -N NODES --ntasks-per-node=GPUS --kill-on-bad-exit=1 --environment=EDF [--partition P]
       [--account A] --time T cordee preflight --level L --system S --json preflight.json
       --junit preflight.xml --exclude-file bad-nodes.txt
keeps the JUnit file as its test report (artifacts:reports:junit) and all three files as artifacts
whatever the outcome (when: always), and lets exit code 1 (warnings only) pass as an allowed failure.

Every value is checked against a grammar here (InputError naming the option and what is allowed),
then quoted for the shell (each srun word) and for YAML (the whole line) by the template's filters.
"""

from __future__ import annotations

import re

from cordee.errors import InputError, shown
from cordee.preflight.results import LEVELS

TEMPLATE = "ci/gitlab-preflight.yml.j2"
MAX_NODES = 65536  # Slurm's limit on one hostlist range; a preflight of more is surely a typo
CPU_TASKS_PER_NODE = 2  # a system without GPUs (cpu-ci): two CPU ranks per node, as standalone runs
OUTPUTS = {"json": "preflight.json", "junit": "preflight.xml", "exclude": "bad-nodes.txt"}
RELATIVE_ALLOWED = (
    "a path relative to the job's working directory, of letters, digits and ._- (no '.' or '..' parts)"
)

# Slurm names (partition, account): letters, digits, '_', '.', '-' (sinfo / sacctmgr accept more,
# but nothing a site names a partition with needs more)
_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# srun --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (man srun); never unlimited here
_SLURM_TIME = re.compile(r"[0-9]{1,6}(?::[0-9]{2}){0,2}|[0-9]{1,3}-[0-9]{1,2}(?::[0-9]{2}){0,2}")
# GitLab stage, job and runner tag names as this template writes them
_CI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def _match(pattern: re.Pattern, value: object, option: str, allowed: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InputError(f"{option} {shown(value)}: not valid; allowed: {allowed}")
    return value


def check_environment_name(value: object) -> str:
    """An EDF for srun --environment: a NAME (looked up in $EDF_PATH, the grammar of the EDFs
    `cordee image build` installs) or the path of a .toml file (absolute, or relative to the job's
    working directory), as the CSCS Container Engine takes it."""
    from cordee.images.spec.fields import Invalid
    from cordee.images.spec.grammars import ABS_PATH, NAME_RE, REL_PATH

    if isinstance(value, str) and re.fullmatch(NAME_RE, value) and len(value) <= 128:
        return value
    if isinstance(value, str) and value.endswith(".toml"):
        field = ABS_PATH if value.startswith("/") else REL_PATH
        # REL_PATH's own words speak of a spec's folder: here the path is the job's
        allowed = field.allowed if field is ABS_PATH else RELATIVE_ALLOWED
        try:
            return field.check(value, "--environment")
        except Invalid as e:
            raise InputError(f"--environment {shown(value)}: {e.problems[0].problem}; {allowed}") from None
    raise InputError(f"--environment {shown(value)}: not an EDF name ({NAME_RE}) or the path of a .toml file")


def _nodes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NODES:
        what = shown(value) if isinstance(value, str) else repr(value)[:40]
        raise InputError(f"--nodes {what}: must be a whole number of nodes, 1..{MAX_NODES}")
    return value


def srun_argv(
    nodes: int,
    environment: str,
    level: str,
    system: str,
    tasks_per_node: int,
    partition: str | None = None,
    account: str | None = None,
    time: str = "00:10:00",
) -> list[str]:
    """The job's command line, one word per item (validated values only)."""
    argv = ["srun", "-N", str(nodes), f"--ntasks-per-node={tasks_per_node}", "--kill-on-bad-exit=1"]
    argv.append(f"--environment={environment}")
    if partition:
        argv.append(f"--partition={partition}")
    if account:
        argv.append(f"--account={account}")
    argv.append(f"--time={time}")
    argv += ["cordee", "preflight", "--level", level, "--system", system]
    argv += ["--json", OUTPUTS["json"], "--junit", OUTPUTS["junit"], "--exclude-file", OUTPUTS["exclude"]]
    return argv


def render_ci(
    nodes: int,
    environment: str,
    level: str,
    system: str,
    partition: str | None = None,
    account: str | None = None,
    time: str = "00:10:00",
    stage: str = "preflight",
    *,
    job: str = "cordee-preflight",
    tags: tuple[str, ...] | list[str] = (),
) -> str:
    """The GitLab CI YAML of one preflight job. One task per GPU of the system profile (two CPU
    ranks per node on a system without GPUs). InputError on any value outside its grammar, an
    unknown level or an unknown system (naming the known ones)."""
    from cordee import __version__
    from cordee.preflight.systems import load_system
    from cordee.recipes import render

    nodes = _nodes(nodes)
    environment = check_environment_name(environment)
    if level not in LEVELS:
        raise InputError(f"--level {shown(level)}: not one of {', '.join(LEVELS)}")
    profile = load_system(system)
    if partition is not None:
        _match(_SLURM_NAME, partition, "--partition", "a Slurm name: letters, digits, '_', '.', '-'")
    if account is not None:
        _match(_SLURM_NAME, account, "--account", "a Slurm name: letters, digits, '_', '.', '-'")
    _match(_SLURM_TIME, time, "--time", "a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS")
    if not time.strip("0:-"):  # srun(1): a time limit of zero imposes no limit at all
        raise InputError(f"--time {shown(time)}: zero means no time limit to Slurm; give one, e.g. 00:10:00")
    ci_allowed = "letters, digits, '_', '.', ':', '-' (at most 64)"
    _match(_CI_NAME, stage, "--stage", ci_allowed)
    _match(_CI_NAME, job, "--job", ci_allowed)
    for tag in tags:
        _match(_CI_NAME, tag, "--tag", ci_allowed)
    tasks = profile.gpus_per_node or CPU_TASKS_PER_NODE
    argv = srun_argv(nodes, environment, level, profile.name, tasks, partition, account, time)
    context = {
        "version": __version__,
        "stage": stage,
        "job": job,
        "tags": list(tags),
        "srun": argv,
        "outputs": OUTPUTS,
    }
    return render(TEMPLATE, context)
