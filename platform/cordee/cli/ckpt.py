"""`cordee ckpt interval`: the checkpoint interval that loses least to failures (Young 1974, Daly
2006; cordee.storage.interval)."""

from __future__ import annotations

import json

import click

from cordee.cli.options import Number, json_option, verb_group
from cordee.storage.interval import MAX_COST_S, MAX_MTBF_H, MAX_NODES, MAX_STEP_S, MIN_VALUE, SCHEMA

INTERVAL_HELP = (
    "Young's interval sqrt(2 C M) and Daly's higher-order estimate (valid for C < 2M; M itself "
    "beyond), with the expected fraction of wall time lost at each (checkpoint overhead plus rework "
    "after failures, from Daly's complete model, Poisson failures). C is the time one checkpoint "
    "blocks training (the trainer's metrics record it as checkpoint_s). M is the job's mean time "
    "between failures: --mtbf HOURS, or --node-mtbf HOURS with --nodes N for M = node MTBF / N "
    "(independent node failures). With --step-time, the intervals in training steps "
    "(checkpoint.interval). Sources: J. W. Young, CACM 17(9), 1974; J. T. Daly, FGCS 22(3), 2006."
)


@verb_group("ckpt", "Checkpoint planning: the interval that loses least (Young/Daly).")
def command() -> None:
    pass


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def _lines(p, how_m: str) -> list[str]:
    from cordee.storage.interval import DALY, YOUNG

    def steps(n):
        return f" = {n} steps of {p.step_time_s:g} s" if n is not None else ""

    daly_note = "" if p.daly_valid else " (C >= 2M: the series does not apply; Daly gives M)"
    return [
        f"checkpoint cost C = {p.cost_s:g} s, MTBF M = {_hours(p.mtbf_s)} ({how_m})",
        f"young  sqrt(2CM)      {p.young_s:12.1f} s ({_hours(p.young_s)}){steps(p.young_steps)}, "
        f"expected loss {100 * p.loss_young:.2f}%",
        f"daly   higher order   {p.daly_s:12.1f} s ({_hours(p.daly_s)}){steps(p.daly_steps)}, "
        f"expected loss {100 * p.loss_daly:.2f}%{daly_note}",
        f"sources: {YOUNG}; {DALY}",
    ]


@command.command(
    "interval", short_help="Young/Daly checkpoint interval from cost and MTBF.", help=INTERVAL_HELP
)
@click.option(
    "--cost", "cost_s", required=True, type=Number(float, MIN_VALUE, MAX_COST_S), metavar="SECONDS",
    help="time one checkpoint blocks training",
)  # fmt: skip
@click.option("--mtbf", "mtbf_h", type=Number(float, MIN_VALUE, MAX_MTBF_H), metavar="HOURS", help="job MTBF")
@click.option(
    "--nodes", type=Number(int, 1, MAX_NODES), metavar="N", help="nodes of the job (with --node-mtbf)"
)
@click.option(
    "--node-mtbf", "node_mtbf_h", type=Number(float, MIN_VALUE, MAX_MTBF_H), metavar="HOURS",
    help="MTBF of one node (with --nodes): M = node MTBF / N",
)  # fmt: skip
@click.option(
    "--step-time", "step_time_s", type=Number(float, MIN_VALUE, MAX_STEP_S), metavar="SECONDS",
    help="seconds per training step: the intervals in steps",
)  # fmt: skip
@json_option(SCHEMA)
def interval(cost_s, mtbf_h, nodes, node_mtbf_h, step_time_s, as_json) -> int:
    from cordee.errors import InputError
    from cordee.storage.interval import HOUR_S, job_mtbf_s, plan

    if mtbf_h is not None and (nodes is not None or node_mtbf_h is not None):
        raise InputError(
            "cordee ckpt interval: give --mtbf HOURS or --nodes N with --node-mtbf HOURS, not both"
        )
    if mtbf_h is not None:
        mtbf_s, how = mtbf_h * HOUR_S, "--mtbf"
    elif nodes is not None and node_mtbf_h is not None:
        mtbf_s, how = job_mtbf_s(node_mtbf_h, nodes), f"node MTBF {node_mtbf_h:g} h / {nodes} nodes"
    else:
        raise InputError(
            "cordee ckpt interval: --mtbf HOURS is required (or --nodes N with --node-mtbf HOURS)"
        )
    result = plan(cost_s, mtbf_s, step_time_s)
    if as_json:
        print(json.dumps({**result.as_dict(), "mtbf_from": how}, indent=2))
    else:
        print("\n".join(_lines(result, how)))
    return 0
