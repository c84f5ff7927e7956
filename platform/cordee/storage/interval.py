"""The checkpoint interval that loses least to failures: Young's first-order formula and Daly's
higher-order estimate, the expected fraction of time lost at an interval, and the measured cost and
step time read from the trainer's metrics (JSONL, schema cordee.train.step/1).

Model (both papers): failures arrive as a Poisson process with mean time between failures M; a
checkpoint costs C seconds of lost work (the time the training loop is blocked while it saves);
after a failure the job resumes from the last complete checkpoint. The interval tau is the compute
time between two checkpoints, checkpoint time not included.

- J. W. Young, "A first order approximation to the optimum checkpoint interval", Communications of
  the ACM 17(9):530-531, 1974: tau = sqrt(2 C M).
- J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
  Future Generation Computer Systems 22(3):303-312, 2006: for C < 2M,
  tau = sqrt(2 C M) [1 + (1/3) sqrt(C / 2M) + (1/9) (C / 2M)] - C, and tau = M for C >= 2M.
  Its complete model gives the expected wall time of a solution time Ts (restart time R):
  Tw = M e^(R/M) (e^((tau + C)/M) - 1) Ts / tau; the fraction of wall time lost is 1 - Ts / Tw.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass

from cordee.errors import InputError, shown

SCHEMA = "cordee.ckpt.interval/1"
YOUNG = 'J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM 17(9), 1974'
DALY = (
    'J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps", '
    "FGCS 22(3), 2006"
)
HOUR_S = 3600.0
# Bounds of the inputs: a checkpoint of at most 30 days, an MTBF of at most 1,000 years, a step of at
# most a day; below a microsecond nothing is a measurement. Beyond these the arithmetic stays finite.
MAX_COST_S = 30 * 86400.0
MAX_MTBF_H = 1000 * 8766.0
MAX_STEP_S = 86400.0
MAX_NODES = 1_000_000
MIN_VALUE = 1e-6
METRICS_MAX_BYTES = 256 << 20  # about 500,000 step records of the trainer


def _positive(value: float, what: str, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what} {shown(value)}: must be a number")
    if not (math.isfinite(value) and MIN_VALUE <= value <= most):
        raise InputError(f"{what} {shown(value)}: must be a finite number in {MIN_VALUE:g}..{most:g}")
    return float(value)


def young_interval(cost_s: float, mtbf_s: float) -> float:
    """Young (1974): sqrt(2 C M), seconds of compute between checkpoints."""
    return math.sqrt(2.0 * cost_s * mtbf_s)


def daly_interval(cost_s: float, mtbf_s: float) -> float:
    """Daly (2006), the higher-order estimate; M itself once C >= 2M (where the series is not
    valid: checkpointing then costs more than it saves, and one interval per failure is best)."""
    if cost_s >= 2.0 * mtbf_s:
        return mtbf_s
    x = cost_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * cost_s * mtbf_s) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - cost_s


def expected_loss(interval_s: float, cost_s: float, mtbf_s: float, restart_s: float = 0.0) -> float:
    """Fraction of wall time lost (checkpoint overhead + rework after failures + restarts) at
    `interval_s`, from Daly's complete model: 1 - tau / (M e^(R/M) (e^((tau + C)/M) - 1))."""
    exponent = (interval_s + cost_s) / mtbf_s
    if exponent + restart_s / mtbf_s > 700:  # e^700 is near the largest float: nothing gets done
        return 1.0
    wall_per_compute = mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1(exponent) / interval_s
    return max(0.0, 1.0 - 1.0 / wall_per_compute)


def job_mtbf_s(node_mtbf_h: float, nodes: int) -> float:
    """MTBF of a job over `nodes` nodes that fail independently, each with MTBF `node_mtbf_h` hours:
    the job stops at the first failure of any node, so M = node MTBF / N."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise InputError(f"--nodes {shown(nodes)}: must be an integer 1..{MAX_NODES}")
    return _positive(node_mtbf_h, "--node-mtbf", MAX_MTBF_H) * HOUR_S / nodes


def interval_steps(interval_s: float, step_time_s: float) -> int:
    """The interval in whole training steps, at least 1."""
    return max(1, round(interval_s / step_time_s))


@dataclass(frozen=True)
class Plan:
    cost_s: float
    mtbf_s: float
    young_s: float
    daly_s: float
    daly_valid: bool  # C < 2M: the higher-order series applies (else Daly's interval is M)
    loss_young: float  # expected fraction of wall time lost at Young's interval
    loss_daly: float
    step_time_s: float | None = None
    young_steps: int | None = None
    daly_steps: int | None = None

    def as_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            **asdict(self),
            "sources": {"young": YOUNG, "daly": DALY},
            "model": "Poisson failures, interval = compute time between checkpoints; loss from "
            "Daly's complete model with restart time 0",
        }


def plan(cost_s: float, mtbf_s: float, step_time_s: float | None = None) -> Plan:
    """Both intervals and their expected losses; with a step time, the intervals in steps.
    InputError on a cost, MTBF or step time that is not a finite number in range."""
    cost_s = _positive(cost_s, "checkpoint cost (s)", MAX_COST_S)
    mtbf_s = _positive(mtbf_s, "MTBF (s)", MAX_MTBF_H * HOUR_S)
    young, daly = young_interval(cost_s, mtbf_s), daly_interval(cost_s, mtbf_s)
    steps: dict = {}
    if step_time_s is not None:
        step_time_s = _positive(step_time_s, "step time (s)", MAX_STEP_S)
        steps = {
            "young_steps": interval_steps(young, step_time_s),
            "daly_steps": interval_steps(daly, step_time_s),
        }
    return Plan(
        cost_s=cost_s, mtbf_s=mtbf_s, young_s=young, daly_s=daly, daly_valid=cost_s < 2.0 * mtbf_s,
        loss_young=expected_loss(young, cost_s, mtbf_s), loss_daly=expected_loss(daly, cost_s, mtbf_s),
        step_time_s=step_time_s, **steps,
    )  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """What the trainer's metrics say: the median blocking time of the steps after a save and the
    median step time (saves excluded: the trainer times them apart)."""

    cost_s: float
    step_time_s: float
    saves: int
    steps: int


def measured_from_metrics(path: str) -> Measured:
    """The median `checkpoint_s` of the records that saved (> 0) and the median `step_time_s` of all
    records of a cordee.train.step/1 JSONL file. InputError naming the file and line otherwise; a
    file without checkpoint records is an error too (no cost was measured)."""
    from cordee.fileio import ReadError, read_bounded

    try:
        data = read_bounded(path, METRICS_MAX_BYTES)
    except ReadError as e:
        raise InputError(f"--metrics {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--metrics {shown(path)}: not UTF-8 text (byte {e.start})") from None
    costs: list[float] = []
    steps: list[float] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise InputError(f"--metrics {shown(path)} line {number}: not a JSON record") from None
        if not isinstance(record, dict) or record.get("schema") != "cordee.train.step/1":
            raise InputError(
                f"--metrics {shown(path)} line {number}: not a step record (schema cordee.train.step/1)"
            )
        step_time = _finite(record.get("step_time_s"))
        if step_time is not None and step_time > 0:
            steps.append(step_time)
        cost = _finite(record.get("checkpoint_s"))
        if cost is not None and cost > 0:
            costs.append(cost)
    if not steps:
        raise InputError(f"--metrics {shown(path)}: no step records with step_time_s")
    if not costs:
        raise InputError(
            f"--metrics {shown(path)}: no checkpoint records (no step with checkpoint_s > 0): "
            "run with checkpoint.dir set, or give --ckpt-cost"
        )
    return Measured(statistics.median(costs), statistics.median(steps), len(costs), len(steps))


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float's range: not a duration the trainer wrote
        return None
    return value if math.isfinite(value) else None
