"""`cordee job render`: the sbatch script of a chained, resumable `cordee train` run
(cordee.train.jobrender; the template is recipes/job/sbatch.sh.j2)."""

from __future__ import annotations

import sys

import click

from cordee.cli.options import Number, verb_group


@verb_group("job", "Render sbatch scripts for chained, resumable training jobs.")
def command() -> None:
    pass


@command.command(
    "render",
    short_help="Write the sbatch script of a chained training run.",
    help="Writes an sbatch script whose step is `srun --kill-on-bad-exit=1 [--environment=EDF] "
    "cordee launch -- cordee train --config CFG key=value...`. Slurm sends --signal to the "
    "step's tasks --signal-before seconds before the time limit (it may come up to a minute "
    "earlier); the trainer saves a checkpoint and exits 75, and the chain continues: singleton "
    "mode queues a successor with --dependency=singleton, requeue mode requeues the job. Exit 0 "
    "ends the chain; --max-failures consecutive failures stop it. The signal must be one of the "
    "trainer's stop_signals (default SIGUSR1, SIGUSR2, SIGTERM). The checkpoint interval: "
    "--save-every N, or computed by Daly's formula from the trainer's --metrics (or --ckpt-cost and "
    "--step-time) and --mtbf (or --node-mtbf); the script's comment says where it came from.",
)
@click.option("--name", required=True, metavar="NAME", help="job name; the chain's jobs share it")
@click.option("--nodes", required=True, type=Number(int, 1, 100_000), metavar="N")
@click.option(
    "--ntasks-per-node", required=True, type=Number(int, 1, 1024), metavar="G", help="tasks (GPUs) per node"
)
@click.option("--time", "time_limit", required=True, metavar="HH:MM:SS", help="time limit of each job")
@click.option("--environment", metavar="EDF", help="srun --environment (Container Engine); default: none")
@click.option("--config", metavar="CFG", help="cordee train --config (a TOML file or a shipped name)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="config override (repeatable)")
@click.option("--command", "command_line", metavar="CMD", help="run CMD instead of `cordee train ...`")
@click.option("--signal", "sig", default="SIGUSR1", show_default=True, metavar="SIG")
@click.option("--signal-before", default=120, show_default=True, type=Number(int, 1, 65535), metavar="S")
@click.option("--chain", type=click.Choice(["singleton", "requeue"]), default="singleton", show_default=True)
@click.option("--max-failures", default=3, show_default=True, type=Number(int, 1, 1000), metavar="N")
@click.option(
    "--state-dir", default=".cordee-job", show_default=True, metavar="DIR",
    help="where the failure counter lives (relative: the job's working directory)",
)  # fmt: skip
@click.option("--account", metavar="A")
@click.option("--partition", metavar="P")
@click.option("--output", metavar="PATTERN", help="#SBATCH --output (%x job name, %j job id)")
@click.option("--out", metavar="FILE", help="write the script to FILE (atomically) instead of stdout")
@click.option(
    "--save-every", type=Number(int, 1, 10**9), metavar="N",
    help="checkpoint.interval=N, as given (excludes the computed interval below)",
)  # fmt: skip
@click.option(
    "--metrics", metavar="FILE.jsonl",
    help="the trainer's metrics file (metrics_file): the median checkpoint cost (checkpoint_s of "
    "the steps that saved) and step time give Daly's interval, rendered as checkpoint.interval",
)  # fmt: skip
@click.option("--ckpt-cost", "ckpt_cost_s", type=Number(float, 1e-6, 30 * 86400.0), metavar="S",
              help="checkpoint cost in seconds (instead of the measured one)")  # fmt: skip
@click.option("--step-time", "step_time_s", type=Number(float, 1e-6, 86400.0), metavar="S",
              help="seconds per step (instead of the measured one)")  # fmt: skip
@click.option("--mtbf", "mtbf_h", type=Number(float, 1e-6, 1e7), metavar="HOURS",
              help="the job's mean time between failures, for the computed interval")  # fmt: skip
@click.option("--node-mtbf", "node_mtbf_h", type=Number(float, 1e-6, 1e7), metavar="HOURS",
              help="one node's MTBF: the job's is node MTBF / --nodes")  # fmt: skip
def render(
    name, nodes, ntasks_per_node, time_limit, environment, config, overrides, command_line, sig,
    signal_before, chain, max_failures, state_dir, account, partition, output, out, save_every, metrics,
    ckpt_cost_s, step_time_s, mtbf_h, node_mtbf_h,
) -> int:  # fmt: skip
    from cordee.errors import InputError
    from cordee.fileio import write_atomic
    from cordee.train.jobrender import JobOptions, checkpoint_interval, render_job, split_command

    if command_line is not None and (config or overrides):
        raise InputError("cordee job render: --command replaces `cordee train`: drop --config and --set")
    every, note = checkpoint_interval(
        save_every=save_every, metrics=metrics, ckpt_cost_s=ckpt_cost_s, step_time_s=step_time_s,
        mtbf_h=mtbf_h, node_mtbf_h=node_mtbf_h, nodes=nodes,
    )  # fmt: skip
    opts = JobOptions(
        name=name, nodes=nodes, ntasks_per_node=ntasks_per_node, time=time_limit, config=config,
        overrides=tuple(overrides), command=split_command(command_line) if command_line is not None else (),
        environment=environment, signal=sig, signal_before=signal_before, chain=chain,
        max_failures=max_failures, state_dir=state_dir, account=account, partition=partition, output=output,
        save_every=every, save_every_note=note,
    )  # fmt: skip
    text = render_job(opts)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        write_atomic(out, text, mode=0o755)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write there: {e.strerror or e}") from None
    print(f"cordee: wrote {out}", file=sys.stderr)
    return 0
