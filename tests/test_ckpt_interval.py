"""Checkpoint interval (cordee.storage.interval, `cordee ckpt interval`): Young's and Daly's formulas
against the values Daly's paper states, Daly's interval against the numerical minimum of the loss
model, the steps, the MTBF of N nodes, the metrics reader on real JSONL files, and the real CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cordee.errors import InputError
from cordee.storage import interval as iv

CORDEE = str(Path(sys.executable).with_name("cordee"))
MIN = 60.0
HOUR = 3600.0


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CORDEE, "ckpt", "interval", *args], capture_output=True, text=True, timeout=60)


# Daly (2006), figures 3-5 (R = 10 min, dump time 5 min): "The new model predicts tau_opt = 117 min"
# for M = 24 h, 57 min for M = 6 h, 9.1 min for M = 15 min (the paper's abstract page, ScienceDirect
# doi:10.1016/j.future.2004.11.016). Daly's estimate does not depend on R.
@pytest.mark.parametrize(("mtbf_s", "paper_min"), [(24 * HOUR, 117), (6 * HOUR, 57), (15 * MIN, 9.1)])
def test_daly_matches_the_values_in_the_paper(mtbf_s, paper_min):
    tau = iv.daly_interval(5 * MIN, mtbf_s) / MIN
    assert abs(tau - paper_min) < 0.5, tau


def test_young_is_the_square_root_of_2_c_m():
    assert iv.young_interval(5 * MIN, 24 * HOUR) == pytest.approx(120 * MIN)  # sqrt(2 * 5 * 1440) min
    assert iv.young_interval(2.0, 8.0) == pytest.approx(math.sqrt(32.0))


def _argmin(f, lo, hi, iterations=200):
    """Golden-section search: the minimum of a unimodal f on [lo, hi]."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(iterations):
        c, d = b - g * (b - a), a + g * (b - a)
        if f(c) < f(d):
            b = d
        else:
            a = c
    return (a + b) / 2


@pytest.mark.parametrize(("cost", "mtbf"), [(40.0, 24 * HOUR), (300.0, 6 * HOUR), (600.0, 1 * HOUR)])
def test_daly_is_near_the_minimum_of_the_complete_model_and_beats_young(cost, mtbf):
    best = _argmin(lambda t: iv.expected_loss(t, cost, mtbf), 1.0, 10 * mtbf)
    daly, young = iv.daly_interval(cost, mtbf), iv.young_interval(cost, mtbf)
    assert abs(daly - best) / best < 0.01, (daly, best)  # Daly's paper: within about 1% for C < M/2
    assert iv.expected_loss(daly, cost, mtbf) <= iv.expected_loss(young, cost, mtbf)
    # the loss at the optimum is about sqrt(2C/M) (first order), and never below the overhead alone
    loss = iv.expected_loss(daly, cost, mtbf)
    assert cost / (daly + cost) < loss < 1.5 * math.sqrt(2 * cost / mtbf)


def test_daly_beyond_its_validity_gives_m():
    assert iv.daly_interval(7200.0, 3600.0) == 3600.0  # C = 2M
    plan = iv.plan(10_000.0, 3600.0)
    assert (
        plan.daly_s == 3600.0
        and not plan.daly_valid
        and plan.young_s == pytest.approx(math.sqrt(2 * 1e4 * 3600))
    )


def test_expected_loss_grows_with_the_failure_rate_and_saturates():
    losses = [iv.expected_loss(600.0, 30.0, m) for m in (100 * HOUR, 10 * HOUR, HOUR, 600.0)]
    assert losses == sorted(losses) and 0 < losses[0] < losses[-1] < 1
    assert iv.expected_loss(1.0, 1e6, 1.0) == 1.0  # e^(1e6): nothing gets done, no overflow


def test_steps_and_node_mtbf():
    plan = iv.plan(40.0, iv.job_mtbf_s(50_000.0, 1000), step_time_s=5.0)
    assert plan.mtbf_s == 50_000.0 * HOUR / 1000
    assert plan.daly_steps == round(plan.daly_s / 5.0) and plan.young_steps == round(plan.young_s / 5.0)
    assert iv.plan(1.0, 2.0, step_time_s=3600.0).daly_steps == 1  # never 0 steps


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, 1e300, "5", True])
def test_bad_numbers_are_input_errors(bad):
    with pytest.raises(InputError):
        iv.plan(bad, 3600.0)
    with pytest.raises(InputError):
        iv.plan(10.0, bad)


def test_bad_node_counts():
    for nodes in (0, -3, 10**9, 2.5, True):
        with pytest.raises(InputError, match="--nodes"):
            iv.job_mtbf_s(1000.0, nodes)


# --- the trainer's metrics ------------------------------------------------------------------------


def write_metrics(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"schema": "cordee.train.step/1", **r}) + "\n" for r in rows))
    return path


def test_measured_medians_from_a_metrics_file(tmp_path):
    rows = [{"step": i, "step_time_s": t, "checkpoint_s": c}
            for i, (t, c) in enumerate([(1.0, 0.0), (1.2, 0.0), (0.9, 7.0), (1.1, 0.0), (5.0, 9.0),
                                        (1.0, 0.0), (1.05, 8.0)], 1)]  # fmt: skip
    m = iv.measured_from_metrics(str(write_metrics(tmp_path / "m.jsonl", rows)))
    assert (m.cost_s, m.saves, m.steps) == (8.0, 3, 7)
    assert m.step_time_s == 1.05  # median of the seven step times


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            '{"schema": "cordee.train.step/1", "step_time_s": 1.0, "checkpoint_s": 0.0}\n',
            "no checkpoint records",
        ),
        ('{"schema": "cordee.train.step/1", "checkpoint_s": 3.0}\n', "no step records"),
        ("not json\n", "line 1: not a JSON record"),
        ('{"schema": "other/1"}\n', "not a step record"),
        ("[" * 100000 + "\n", "not a JSON record"),
        ("", "no step records"),
    ],
)
def test_metrics_problems_are_one_line_input_errors(tmp_path, text, fragment):
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match=fragment) as e:
        iv.measured_from_metrics(str(path))
    assert "\n" not in str(e.value)


def test_metrics_that_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="--metrics .*directory"):
        iv.measured_from_metrics(str(tmp_path))
    with pytest.raises(InputError, match="--metrics .*cannot read"):
        iv.measured_from_metrics(str(tmp_path / "missing.jsonl"))


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_json_names_the_formulas_and_their_sources():
    r = cli("--cost", "300", "--mtbf", "24", "--step-time", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cordee.ckpt.interval/1"
    assert doc["young_s"] == pytest.approx(math.sqrt(2 * 300 * 24 * HOUR))
    assert doc["daly_s"] == pytest.approx(iv.daly_interval(300.0, 24 * HOUR))
    assert doc["daly_steps"] == round(doc["daly_s"] / 2) and doc["daly_valid"] is True
    assert "Young" in doc["sources"]["young"] and "CACM 17(9), 1974" in doc["sources"]["young"]
    assert "Daly" in doc["sources"]["daly"] and "FGCS 22(3), 2006" in doc["sources"]["daly"]
    assert 0 < doc["loss_daly"] <= doc["loss_young"] < 1


def test_cli_nodes_and_node_mtbf():
    r = cli("--cost", "40", "--nodes", "1000", "--node-mtbf", "50000", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mtbf_s"] == pytest.approx(50.0 * HOUR)


def test_cli_text():
    r = cli("--cost", "300", "--mtbf", "24")
    assert r.returncode == 0 and "young" in r.stdout and "daly" in r.stdout and "sources:" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--cost", "0", "--mtbf", "1"],
        ["--cost", "-5", "--mtbf", "1"],
        ["--cost", "nan", "--mtbf", "1"],
        ["--cost", "inf", "--mtbf", "1"],
        ["--cost", "1e400", "--mtbf", "1"],
        ["--cost", "10", "--mtbf", "1e300"],
        ["--cost", "ten", "--mtbf", "1"],
        ["--cost", "10"],
        ["--cost", "10", "--nodes", "4"],
        ["--cost", "10", "--mtbf", "1", "--node-mtbf", "5", "--nodes", "2"],
        ["--cost", "10", "--mtbf", "1", "--step-time", "0"],
        ["--cost", "10", "--nodes", "0", "--node-mtbf", "5"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args):
    r = cli(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
