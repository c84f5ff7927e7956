"""`cordee job render`: the sbatch script of a chained, resumable training run.

One job of the chain runs `srun --kill-on-bad-exit=1 [--environment=EDF] cordee launch -- cordee
train --config CFG key=value...`. Slurm sends `--signal` to the step's tasks `--signal-before`
seconds before the time limit (`sbatch --signal=USR1@120`; without "B:" the batch shell is not
signalled, see sbatch(1)); the trainer then saves a complete checkpoint and exits 75. The script
reads the step's exit code:

    0    training finished: the chain ends
    75   stopped by the signal after a complete checkpoint: the chain continues
    else a failure: the chain continues (resuming from the newest complete checkpoint) until
         `--max-failures` consecutive failures, counted in STATE_DIR/NAME.failures

singleton: each job first queues its successor (`sbatch --dependency=singleton`, same name: it
starts once this job has ended, however it ends) and cancels it when the chain ends.
requeue: `#SBATCH --requeue`, and the job requeues itself (`scontrol requeue`) to continue.

Values on #SBATCH lines are checked against what sbatch reads there (no quoting exists); values on
shell lines go through the templates' `sh` quoting filter.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from cordee.errors import InputError, one_line, shown

CHAINS = ("singleton", "requeue")
MAX_SIGNAL_BEFORE_S = 65535  # sbatch(1): sig_time is at most 65535 seconds
MAX_SAVE_EVERY = 10**9  # the trainer's bound on checkpoint.interval
_SBATCH_WORD = re.compile(r"[A-Za-z0-9._+-]{1,128}", re.ASCII)
_OUTPUT = re.compile(r"[A-Za-z0-9._%/+-]{1,512}", re.ASCII)
_TIME = re.compile(r"(?:([0-9]{1,3})-)?([0-9]{1,3}):([0-5][0-9]):([0-5][0-9])", re.ASCII)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)


@dataclass(frozen=True)
class JobOptions:
    name: str
    nodes: int
    ntasks_per_node: int
    time: str  # [D-]HH:MM:SS
    config: str | None = None
    overrides: tuple[str, ...] = ()  # key=value for `cordee train`
    command: tuple[str, ...] = ()  # words that replace `cordee train ...` (a stand-in, tests)
    environment: str | None = None  # EDF name or path for srun --environment (the Container Engine)
    signal: str = "SIGUSR1"
    signal_before: int = 120
    chain: str = "singleton"
    max_failures: int = 3
    state_dir: str = ".cordee-job"  # relative paths: the job's working directory (the submit dir)
    account: str | None = None
    partition: str | None = None
    output: str | None = None  # #SBATCH --output pattern (%x job name, %j job id)
    save_every: int | None = None  # checkpoint.interval in steps (see checkpoint_interval)
    save_every_note: str = ""  # where that number comes from, for the script's comment


def time_seconds(text: str) -> int:
    """[D-]HH:MM:SS -> seconds; InputError otherwise."""
    m = _TIME.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InputError(f"--time {shown(text)}: expected HH:MM:SS or D-HH:MM:SS (e.g. 04:00:00)")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _printable(value: str, what: str) -> str:
    if not value or not value.isprintable():
        raise InputError(f"{what} {shown(value)}: must be non-empty, without control characters")
    return value


def _sbatch_value(value: str, what: str, pattern: re.Pattern = _SBATCH_WORD) -> str:
    """A value for an #SBATCH line: sbatch reads these itself, without a shell, so no quoting can
    protect them; only a plain charset is accepted."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InputError(f"{what} {shown(value)}: allowed are letters, digits and {_allowed(pattern)}")
    return value


def _allowed(pattern: re.Pattern) -> str:
    return "'. _ % / + -'" if pattern is _OUTPUT else "'. _ + -'"


def _override(item: str) -> str:
    key, sep, value = item.partition("=")
    if not sep or not _KEY.fullmatch(key):
        raise InputError(f"--set {shown(item)}: expected key=value with a dotted key (model.n_layers=4)")
    _printable(value or "x", f"--set {key}")
    return item


def _step_words(opts: JobOptions) -> list[str]:
    if opts.command:
        return [_printable(w, "--command word") for w in opts.command]
    if not opts.config:
        raise InputError("cordee job render: --config is required (or --command for another program)")
    words = ["cordee", "train", "--config", _printable(opts.config, "--config")]
    interval = [f"checkpoint.interval={opts.save_every}"] if opts.save_every is not None else []
    return words + [_override(o) for o in opts.overrides] + interval


def checkpoint_interval(
    *, save_every: int | None = None, metrics: str | None = None, ckpt_cost_s: float | None = None,
    step_time_s: float | None = None, mtbf_h: float | None = None, node_mtbf_h: float | None = None,
    nodes: int = 1,
) -> tuple[int | None, str]:  # fmt: skip
    """(checkpoint.interval in steps, where it comes from), or (None, "") when nothing was asked.

    --save-every N is taken as it is. Otherwise Daly's interval (cordee.storage.interval) from the
    checkpoint cost and step time -- measured: the medians of the trainer's metrics file (records
    with checkpoint_s > 0, and step_time_s), or given: --ckpt-cost / --step-time (each overrides the
    measured value) -- and the job's MTBF: --mtbf HOURS, or --node-mtbf HOURS / the job's nodes."""
    from cordee.storage import interval

    computed = (metrics, ckpt_cost_s, step_time_s, mtbf_h, node_mtbf_h)
    if save_every is not None:
        if any(v is not None for v in computed):
            drop = "--metrics, --ckpt-cost, --step-time, --mtbf, --node-mtbf"
            raise InputError(f"--save-every sets the interval itself: drop {drop}")
        return save_every, f"checkpoint.interval={save_every} from --save-every"
    if all(v is None for v in computed):
        return None, ""
    if (mtbf_h is None) == (node_mtbf_h is None):
        raise InputError(
            "the checkpoint interval needs the MTBF: give --mtbf HOURS or --node-mtbf HOURS (one)"
        )
    if metrics is None and (ckpt_cost_s is None or step_time_s is None):
        raise InputError(
            "the checkpoint interval needs --metrics FILE.jsonl, or --ckpt-cost S with --step-time S"
        )
    measured = interval.measured_from_metrics(metrics) if metrics is not None else None
    cost = ckpt_cost_s if ckpt_cost_s is not None else measured.cost_s
    step = step_time_s if step_time_s is not None else measured.step_time_s
    if mtbf_h is not None:
        mtbf_s, mtbf_from = mtbf_h * interval.HOUR_S, f"MTBF {mtbf_h:g} h"
    else:
        mtbf_s = interval.job_mtbf_s(node_mtbf_h, nodes)
        mtbf_from = f"MTBF {mtbf_s / interval.HOUR_S:.4g} h = node MTBF {node_mtbf_h:g} h / {nodes} nodes"
    plan = interval.plan(cost, mtbf_s, step)
    if ckpt_cost_s is not None:
        cost_from = f"--ckpt-cost {cost:g} s"
    else:
        cost_from = f"checkpoint cost {cost:.4g} s (median of {measured.saves} saves in {shown(metrics)})"
    if step_time_s is not None:
        step_from = f"--step-time {step:g} s"
    else:
        step_from = f"step time {step:.4g} s (median of {measured.steps} steps)"
    note = (
        f"checkpoint.interval={plan.daly_steps} steps = Daly's interval {plan.daly_s:.1f} s "
        f"(expected loss {100 * plan.loss_daly:.2f}%) from {cost_from}, {step_from}, {mtbf_from}; "
        f"J. T. Daly, FGCS 22(3), 2006"
    )
    return plan.daly_steps, note


def render_context(opts: JobOptions) -> dict:
    """The template's values, every one checked (InputError naming the option otherwise)."""
    from cordee.train.signals import parse_signal

    if opts.chain not in CHAINS:
        raise InputError(f"--chain {shown(opts.chain)}: one of {', '.join(CHAINS)}")
    limit = time_seconds(opts.time)
    if limit < 60:
        raise InputError(f"--time {opts.time}: at least 00:01:00 (Slurm counts whole minutes)")
    if not 1 <= opts.signal_before <= min(limit - 1, MAX_SIGNAL_BEFORE_S):
        raise InputError(
            f"--signal-before {opts.signal_before}: must be 1..{min(limit - 1, MAX_SIGNAL_BEFORE_S)} "
            f"seconds (less than --time {opts.time})"
        )
    if opts.save_every is not None:
        if opts.command:
            raise InputError("--command replaces `cordee train`: the checkpoint interval does not apply")
        if any(o.partition("=")[0] == "checkpoint.interval" for o in opts.overrides):
            raise InputError(
                "--set checkpoint.interval=... and a computed or --save-every interval: give one"
            )
        every = opts.save_every
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= MAX_SAVE_EVERY:
            raise InputError(f"--save-every {shown(opts.save_every)}: must be an integer 1..{MAX_SAVE_EVERY}")
    for value, what, lo, hi in (
        (opts.nodes, "--nodes", 1, 100_000), (opts.ntasks_per_node, "--ntasks-per-node", 1, 1024),
        (opts.max_failures, "--max-failures", 1, 1000),
    ):  # fmt: skip
        if not isinstance(value, int) or not lo <= value <= hi:
            raise InputError(f"{what} {shown(value)}: must be an integer {lo}..{hi}")
    return {
        "name": _sbatch_value(opts.name, "--name"),
        "nodes": opts.nodes,
        "ntasks_per_node": opts.ntasks_per_node,
        "time": opts.time,
        "signal": parse_signal(opts.signal).name,
        "slurm_signal": parse_signal(opts.signal).name.removeprefix("SIG"),
        "signal_before": opts.signal_before,
        "chain": opts.chain,
        "max_failures": opts.max_failures,
        "state_dir": _printable(opts.state_dir, "--state-dir"),
        "failures_file": f"{opts.name}.failures",
        "account": opts.account and _sbatch_value(opts.account, "--account"),
        "partition": opts.partition and _sbatch_value(opts.partition, "--partition"),
        "output": opts.output and _sbatch_value(opts.output, "--output", _OUTPUT),
        "environment": opts.environment and _printable(opts.environment, "--environment"),
        "step": ["cordee", "launch", "--", *_step_words(opts)],
        "save_every_note": one_line(opts.save_every_note),
    }


def render_job(opts: JobOptions) -> str:
    """The sbatch script text (recipes/job/sbatch.sh.j2)."""
    from cordee import __version__
    from cordee.recipes import render

    return render("job/sbatch.sh.j2", {**render_context(opts), "version": __version__})


def split_command(text: str) -> tuple[str, ...]:
    """--command "python stand_in.py --x 1" -> its words (shell syntax: quotes group words)."""
    try:
        words = tuple(shlex.split(text))
    except ValueError as e:
        raise InputError(f"--command {shown(text)}: {e}") from None
    if not words:
        raise InputError("--command: empty")
    return words
