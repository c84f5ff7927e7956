"""Preflight reports: the JSON document against its JSON Schema (jsonschema), JUnit XML against
our XSD of what GitLab and Jenkins read (xmlschema) and as GitLab parses it (ElementTree, counts),
the table and progress lines (one line each, whatever a detail holds), the PNG plot of real sweep
rows (the bench engine's SweepRow), the bad-node hostlist read back by Slurm's grammar, and the
CI template rendered through the one Jinja2 environment and read back by YAML and shlex."""

from __future__ import annotations

import json
import math
import shlex
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
import xmlschema
import yaml

from cordee.bench.collectives import SweepRow, busbw_factor
from cordee.errors import InputError, one_line
from cordee.launch.hostlist import expand
from cordee.preflight import report
from cordee.preflight.results import Result

SCHEMA = json.loads(
    (Path(report.__file__).parent / "schema" / "preflight.schema.json").read_text(encoding="utf-8")
)
XSD = xmlschema.XMLSchema(str(Path(__file__).parent / "junit" / "junit-subset.xsd"))
HOSTILE = 'bad <x> & "q" \x00\x1b[31m ]]> \u2028 line\nbreak'
META = {"level": "standard", "system": "h200-sxm", "nodes": ["nid001", "nid002", "nid010"], "ranks": 12}
META |= {"started": 1_700_000_000.5, "duration_s": 21.5}


def sweep_result(node: str, scale: float = 1.0, scope: str = "intra", rank: int = 0) -> Result:
    """A collective result carrying rows exactly as the bench engine gives them."""
    rows = []
    for size in (1 << 10, 1 << 16, 1 << 20, 1 << 26):
        time_us = 5 + size / (100e3 * scale)
        algbw = size / time_us / 1e3
        row = SweepRow(
            "all_reduce", size, 4, time_us, algbw, algbw * busbw_factor("all_reduce", 4), True, 0, ()
        )
        rows.append(row.as_dict())
    data = {"metric": f"all_reduce_busbw_{scope}_gbps", "op": "all_reduce", "scope": scope, "rows": rows}
    data["nodes"] = [node] if scope == "intra" else ["nid001", "nid002"]
    return Result(f"collective.all_reduce.{scope}", "ok", node if scope == "intra" else "", rank, data=data)


def nan_first_row(r: Result) -> Result:
    rows = [dict(r.data["rows"][0], busbw_gbps=math.inf)] + r.data["rows"][1:]
    return replace(r, data=dict(r.data, rows=rows))


def mixed_results() -> list[Result]:
    return [
        Result("gpu.count", "ok", "nid001", value=4.0, threshold=4.0, unit="GPUs", duration_s=0.2),
        Result("env.profile", "fail", "nid001", value=1.0, detail="1 dangerous (NCCL_PROTO)"),  # config
        Result("gpu.ecc", "fail", "nid002", value=3.0, threshold=0.0, unit="errors", data={"kind": "max"}),
        Result(
            "gemm", "warn", "nid002", rank=5, value=600.5, threshold=700.0, unit="TFLOP/s", detail=HOSTILE
        ),
        Result("gemm", "ok", "nid002", rank=4, value=788.2, threshold=700.0, unit="TFLOP/s"),
        Result("rank", "error", "nid010", rank=9, detail="rank 9 on nid010 stalled: no heartbeat for 10 s"),
        Result("gpu.nvlink", "skip", "nid010", detail="system names no NVLink count"),
        Result("hbm", "ok", "nid001", rank=0, value=math.nan, unit="GB/s"),  # NaN: written as null
        nan_first_row(sweep_result("nid001")),
        Result("isolation", "ok", detail="3 nodes, 0 bad"),  # job-wide
    ]


# --- JSON ------------------------------------------------------------------------------------


def test_document_validates_and_round_trips(tmp_path):
    results = mixed_results()
    doc = report.document(results, META | {"nproc": 4})
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc["schema"] == "cordee.preflight/1" and doc["exit_code"] == 3
    assert doc["summary"] == {"ok": 5, "skip": 1, "warn": 1, "fail": 2, "error": 1}
    assert doc["started"] == "2023-11-14T22:13:20+00:00" and doc["extra"] == {"nproc": 4}
    path = tmp_path / "r.json"
    report.write_json(path, doc)
    back = json.loads(path.read_text())  # strict JSON: no NaN slipped through
    assert back["results"][7]["value"] is None and back["results"][8]["data"]["rows"][0]["busbw_gbps"] is None
    assert [Result.from_dict(d) for d in back["results"]][:7] == [
        replace(r, detail=one_line(r.detail)) for r in results[:7]
    ]
    assert back["results"][3]["detail"].startswith('bad <x> & "q" \\x00\\x1b[31m ]]> \\u2028 line\\nbreak')


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.update(schema="cordee.preflight/2"),
        lambda d: d["results"][0].update(status="bogus"),
        lambda d: d["results"][0].update(detail="two\nlines"),
        lambda d: d["results"][0].pop("rank"),
        lambda d: d["summary"].update(ok=-1),
        lambda d: d.update(exit_code=4),
        lambda d: d.update(unknown=1),
        lambda d: d["results"][8]["data"]["rows"][0].update(bytes=-1),
    ],
)
def test_schema_refuses_broken_documents(breakage):
    doc = report.document(mixed_results(), META)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)


# --- bad nodes -------------------------------------------------------------------------------


def test_bad_nodes_exclude_failed_and_errored_nodes_not_configuration():
    results = mixed_results()
    # env.profile failed on nid001: the same environment everywhere, excluding nid001 fixes nothing
    assert report.bad_nodes(results) == ["nid002", "nid010"]
    doc = report.document(results, META)
    assert doc["exclude"] == "nid[002,010]" and expand(doc["exclude"]) == doc["bad_nodes"]


def test_an_error_marks_its_node_whatever_the_check():
    # a probe that hung on one node is that node's problem, even in a configuration check
    results = [Result("env.nccl", "error", "n7", detail="network probe did not finish within 25 s")]
    results += [Result("env.profile", "fail", "n8"), Result("gpu.count", "warn", "n9")]
    assert report.bad_nodes(results) == ["n7"]


def test_exclude_hostlist_sorts_naturally_and_reads_back(tmp_path):
    results = [Result("gpu.ecc", "fail", f"n{i}") for i in (10, 2, 3, 1, 11)]
    bad = report.bad_nodes(results)
    assert bad == ["n1", "n2", "n3", "n10", "n11"]
    assert expand(report.exclude_hostlist(bad)) == bad
    report.write_exclude(tmp_path / "bad.txt", bad)
    assert (tmp_path / "bad.txt").read_text() == report.exclude_hostlist(bad) + "\n"
    report.write_exclude(tmp_path / "none.txt", [])
    assert (tmp_path / "none.txt").read_text() == ""


def test_unwritable_output_is_one_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot write .*no-such-dir"):
        report.write_json(tmp_path / "no-such-dir" / "r.json", {"schema": "x"})


# --- table and progress lines ----------------------------------------------------------------


def test_table_worst_first_one_line_per_result_and_summary():
    results = mixed_results()
    lines = report.table(results).split("\n")
    assert len(lines) == 1 + len(results) + 2  # header, rows, blank, summary
    statuses = [line.split()[0] for line in lines[1 : 1 + len(results)]]
    assert statuses == ["ERROR", "FAIL", "FAIL", "WARN", "skip", "ok", "ok", "ok", "ok", "ok"]
    assert lines[2].split()[:2] == ["FAIL", "env.profile"] and "max 0" in lines[3]
    assert lines[-1] == (
        "summary: 5 ok, 1 skip, 1 warn, 2 fail, 1 error; bad nodes (2): nid[002,010] -> errors (exit 3)"
    )
    assert all(line.isprintable() for line in lines)


def test_progress_line_is_one_printable_line():
    r = Result("gemm", "warn", "nid002", rank=5, value=600.5, threshold=700.0, unit="TFLOP/s", detail=HOSTILE)
    line = report.progress_line(r)
    assert line.isprintable() and "\n" not in line
    assert line.startswith("[ WARN] gemm on nid002 rank 5 600.5 TFLOP/s (700): bad <x>")
    assert report.progress_line(Result("isolation", "ok")).startswith("[   ok] isolation on job")


# --- JUnit -----------------------------------------------------------------------------------


def test_junit_valid_against_xsd_and_counts_as_gitlab_reads_them(tmp_path):
    results = mixed_results()
    path = tmp_path / "r.xml"
    report.write_junit(path, results, META)
    XSD.validate(str(path))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    total = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    cases = {}
    for suite in root.iter("testsuite"):
        testcases = suite.findall("testcase")
        seen = {"tests": len(testcases)}
        for tag, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            seen[key] = sum(1 for c in testcases if c.find(tag) is not None)
        assert {k: int(suite.get(k)) for k in seen} == seen, suite.get("name")
        for key in total:
            total[key] += seen[key]
        for c in testcases:
            assert c.get("classname") == suite.get("name")
            cases[(c.get("classname"), c.get("name"))] = c
    assert (
        {k: int(root.get(k)) for k in total}
        == total
        == {"tests": 9, "failures": 2, "errors": 1, "skipped": 1}
    )
    gemm = cases[("nid002", "gemm")]  # two ranks, one testcase: the warning passes, marked
    assert gemm.find("failure") is None and "[ WARN] gemm on nid002 rank 5" in gemm.find("system-out").text
    assert {p.get("name"): p.get("value") for p in gemm.iter("property")}["status"] == "warn"
    ecc = cases[("nid002", "gpu.ecc")]
    assert ecc.find("failure").get("type") == "fail"
    assert {p.get("name"): p.get("value") for p in ecc.iter("property")} == {
        "status": "fail", "value": "3", "threshold": "0", "unit": "errors",
    }  # fmt: skip
    assert ("job", "isolation") in cases
    assert "\\x00\\x1b" in gemm.find("system-out").text  # control characters escaped, not dropped


def test_junit_of_nothing_is_still_valid():
    XSD.validate(report.junit([], {"level": "quick"}))


def test_xsd_rejects_what_gitlab_would_misread():
    xml = report.junit(mixed_results(), META)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        XSD.validate(xml.replace('failures="1"', 'failures="-1"', 1))
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        XSD.validate(xml.replace("<testcase ", '<testcase bogus="1" ', 1))


# --- plot ------------------------------------------------------------------------------------


def test_plot_writes_a_png(tmp_path):
    results = [sweep_result("nid001"), sweep_result("nid002", 0.5), sweep_result("", 0.8, "inter")]
    path = tmp_path / "busbw.png"
    report.plot(results, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    labels = {r["node"] for r in report.sweep_rows(results)}
    assert labels == {"nid001", "nid002", "2 nodes, from rank 0"}


def test_plot_of_many_nodes_draws_the_spread(tmp_path):
    results = [sweep_result(f"nid{i:04d}", 0.5 + i / 40) for i in range(40)]
    report.plot(results, tmp_path / "many.png")
    assert (tmp_path / "many.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_without_sweeps_says_why(tmp_path):
    with pytest.raises(report.NoPlotData, match="no collective sweep .* --level standard or long"):
        report.plot([Result("gpu.count", "ok", "nid001")], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- CI template -----------------------------------------------------------------------------

SYSTEM = "h200-sxm"


def test_ci_template_is_yaml_with_the_job_and_srun_line():
    from cordee.preflight.citemplate import render_ci
    from cordee.preflight.systems import load_system

    text = render_ci(4, "pytorch-ngc", "standard", SYSTEM, partition="normal", account="a-01", tags=["alps"])
    doc = yaml.safe_load(text)
    assert doc["stages"] == ["preflight"]
    job = doc["cordee-preflight"]
    assert job["stage"] == "preflight" and job["tags"] == ["alps"]
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["reports"]["junit"] == "preflight.xml"
    assert job["artifacts"]["paths"] == ["preflight.json", "preflight.xml", "bad-nodes.txt"]
    assert job["allow_failure"] == {"exit_codes": [1]}
    gpus = load_system(SYSTEM).gpus_per_node
    assert shlex.split(job["script"][0]) == [
        "srun", "-N", "4", f"--ntasks-per-node={gpus}", "--kill-on-bad-exit=1", "--environment=pytorch-ngc",
        "--partition=normal", "--account=a-01", "--time=00:10:00", "cordee", "preflight", "--level",
        "standard", "--system", SYSTEM, "--json", "preflight.json", "--junit", "preflight.xml",
        "--exclude-file", "bad-nodes.txt",
    ]  # fmt: skip


def test_ci_template_cpu_system_and_edf_path():
    from cordee.preflight.citemplate import render_ci

    job = yaml.safe_load(render_ci(2, "/capstor/edf/my+env@v1.toml", "quick", "cpu-ci", time="5"))[
        "cordee-preflight"
    ]
    argv = shlex.split(job["script"][0])
    assert "--ntasks-per-node=2" in argv and "--environment=/capstor/edf/my+env@v1.toml" in argv
    assert "tags" not in job and "--time=5" in argv


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nodes": 0}, "--nodes 0"),
        ({"nodes": True}, "--nodes True"),
        ({"nodes": 10**6}, "1..65536"),
        ({"environment": "x; rm -rf ~"}, "--environment"),
        ({"environment": "../up.toml"}, "--environment"),
        ({"environment": "/a/../b.toml"}, "'..'"),
        ({"environment": "env\nstages: [x]"}, "--environment"),
        ({"level": "fast"}, "quick, standard, long"),
        ({"system": "no-such-system"}, "no-such-system"),
        ({"partition": "normal --uid=0"}, "--partition"),
        ({"account": "$(id)"}, "--account"),
        ({"time": "UNLIMITED"}, "--time"),
        ({"stage": "a: b"}, "--stage"),
        ({"tags": ["ok", "x\ny"]}, "--tag"),
    ],
)
def test_ci_template_refuses_hostile_values(kwargs, message):
    from cordee.preflight.citemplate import render_ci

    args = {"nodes": 2, "environment": "pytorch", "level": "quick", "system": SYSTEM} | kwargs
    with pytest.raises(InputError) as e:
        render_ci(**args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_ci_template_quotes_what_reaches_it():
    """Values past validation still go through the filters: shell and YAML read them back exactly."""
    from cordee.recipes import render

    hostile = ["srun", "--environment=a b'c\"$(id)`x`;&|*", "{{ not jinja }}", "#no-comment", "- [x]: y"]
    stage = "a: b # c"
    ctx = {"version": "0", "stage": stage, "job": "j: k", "tags": ["'t'"], "srun": hostile}
    ctx["outputs"] = {"json": "a b.json", "junit": "c: d.xml", "exclude": "e'f.txt"}
    doc = yaml.safe_load(render("ci/gitlab-preflight.yml.j2", ctx))
    assert doc["stages"] == [stage] and doc["j: k"]["tags"] == ["'t'"]
    assert shlex.split(doc["j: k"]["script"][0]) == hostile
    assert doc["j: k"]["artifacts"]["reports"]["junit"] == "c: d.xml"
    with pytest.raises(InputError, match="cannot be quoted"):
        render("ci/gitlab-preflight.yml.j2", ctx | {"stage": "x\ny"})
