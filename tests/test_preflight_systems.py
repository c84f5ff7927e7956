"""System profiles of the preflight: every shipped profile and variant loads and is sourced, the
GPU-count variants, judging, every validation rule (one line naming the file and the field),
the TOML writer's round trip, results files and baseline()."""

import json
import math
import statistics

import pytest

from cordee.errors import InputError
from cordee.preflight import systems
from cordee.preflight.baseline import baseline, load_results, profile_toml
from cordee.preflight.results import Result
from cordee.preflight.systems import (
    METRICS,
    Threshold,
    list_systems,
    load_system,
    load_system_file,
    suggest_system,
)

SHIPPED = ["alps-gh200", "cpu-ci", "h100-sxm", "h200-sxm"]
VARIANTS = {"h100-sxm": (1, 2, 4, 8), "h200-sxm": (1, 2, 4, 8), "alps-gh200": (4,), "cpu-ci": ()}
ALL_PROFILES = [(name, None) for name in SHIPPED] + [(n, g) for n in SHIPPED for g in VARIANTS[n]]


def test_the_shipped_systems_are_listed():
    assert list_systems() == SHIPPED


def test_an_unknown_system_names_the_known_ones():
    with pytest.raises(InputError) as e:
        load_system("nope")
    assert str(e.value) == "unknown system 'nope' (known: alps-gh200, cpu-ci, h100-sxm, h200-sxm)"


@pytest.mark.parametrize("name,gpus", ALL_PROFILES)
def test_every_profile_and_variant_loads_and_every_number_is_sourced(name, gpus):
    p = load_system(name, gpus=gpus)
    assert p.name == name and p.description and p.backend in ("nccl", "gloo")
    assert p.source_file.endswith(f"{name}.toml")
    assert p.sweep == tuple(sorted(set(p.sweep))) and p.sweep[-1] >= p.large_message_bytes
    assert p.thresholds, "a profile judges something"
    for metric, t in p.thresholds.items():
        assert t.metric == metric and t.kind == METRICS[metric]
        assert len(t.source) > 20 and t.unit
        assert math.isfinite(t.fail) and t.fail >= 0
        if t.warn is not None:
            assert (t.warn >= t.fail) if t.kind == "min" else (t.warn <= t.fail)
    if p.gpus_per_node is None:
        assert p.backend == "gloo" and not any(
            m.startswith(("gpu_", "gemm_bf16", "hbm")) for m in p.thresholds
        )
    else:
        assert p.backend == "nccl"


@pytest.mark.parametrize("name", ["h100-sxm", "h200-sxm"])
def test_gpu_count_variants(name):
    one, two, eight = (load_system(name, gpus=g) for g in (1, 2, 8))
    assert (one.gpus_per_node, two.gpus_per_node, eight.gpus_per_node) == (1, 2, 8)
    intra = [m for m in one.thresholds if m.endswith("_intra_gbps")]
    assert intra == [], "one GPU per node has no collective within the node"
    assert one.nvlink_links is None and eight.nvlink_links == 18
    for p in (two, eight):
        assert p.threshold("all_reduce_busbw_intra_gbps") is not None
        assert p.threshold("gpu_count").fail == p.gpus_per_node
    # NVLS on eight GPUs: its all_reduce limit is above the two-GPU one; the per-GPU limits are shared
    assert (
        eight.threshold("all_reduce_busbw_intra_gbps").fail
        > two.threshold("all_reduce_busbw_intra_gbps").fail
    )
    assert one.threshold("gemm_bf16_tflops") == eight.threshold("gemm_bf16_tflops")
    assert load_system(name) == eight  # no count: the file's own gpus_per_node


def test_a_gpu_count_without_variant_keeps_the_per_gpu_thresholds_only():
    three = load_system("h200-sxm", gpus=3)
    assert three.gpus_per_node == 3 and "no variant for 3 GPUs" in three.description
    assert not any(m.endswith("_intra_gbps") for m in three.thresholds)
    assert three.threshold("gpu_count") is None and three.threshold("hbm_copy_gbps") is not None


def test_gpu_counts_that_cannot_apply():
    with pytest.raises(InputError, match="for nodes with GPUs"):
        load_system("h200-sxm", gpus=0)
    for bad in (-1, 65, True, 2.0, "8"):
        with pytest.raises(InputError, match="GPUs per node"):
            load_system("h200-sxm", gpus=bad)
    assert load_system("cpu-ci", gpus=2) == load_system("cpu-ci")  # no GPUs: the count does not matter


def test_judge_min_and_max_with_their_boundaries():
    bw = Threshold("pair_busbw_gbps", "min", fail=10.0, warn=20.0, unit="GB/s", source="s")
    assert [bw.judge(v) for v in (9.99, 10.0, 19.9, 20.0, 1e9)] == ["fail", "warn", "warn", "ok", "ok"]
    temp = Threshold("gpu_temp_idle_c", "max", fail=65.0, warn=50.0, unit="C", source="s")
    assert [temp.judge(v) for v in (20, 50, 50.5, 65, 65.1)] == ["ok", "ok", "warn", "warn", "fail"]
    ecc = Threshold("ecc_uncorrected", "max", fail=0.0, warn=None, unit="errors", source="s")
    assert [ecc.judge(v) for v in (0, 1)] == ["ok", "fail"]
    assert bw.judge(math.nan) == temp.judge(math.nan) == "fail"


# --- validation: one bad field -> one line naming the file and the field -----------------------

GOOD = """\
description = "test node"
backend = "nccl"
gpus_per_node = 2
large_message_bytes = 1024
sweep = [512, 1024]

[thresholds.gemm_bf16_tflops]
kind = "min"
fail = 100.0
warn = 120.0
unit = "TFLOP/s"
source = "measured: here"

[gpus.2.thresholds.all_reduce_busbw_intra_gbps]
kind = "min"
fail = 10.0
unit = "GB/s"
source = "measured: here"
"""

BAD = [
    # (what to replace in GOOD, with what, words the message must contain)
    ('description = "test node"\n', 'description = "test node"\ncolour = "red"\n', "unknown field 'colour'"),
    ('description = "test node"\n', "", "'description' is required"),
    ('description = "test node"', 'description = "  "', "'description' must not be empty"),
    ('backend = "nccl"', 'backend = "mpi"', "'backend' is 'mpi'; allowed: nccl, gloo"),
    ("gpus_per_node = 2", 'gpus_per_node = "2"', "'gpus_per_node' must be a whole number"),
    ("gpus_per_node = 2", "gpus_per_node = 0", "'gpus_per_node' must be from 1 to 64"),
    ("gpus_per_node = 2\n", "gpus_per_node = 2\nnet_plugin = 1\n", "'net_plugin' must be true or false"),
    ("gpus_per_node = 2\n", "", "[gpus.N] variants need 'gpus_per_node'"),
    ('backend = "nccl"', 'backend = "gloo"', "backend 'gloo' runs on CPUs"),
    ("large_message_bytes = 1024", "large_message_bytes = 0", "'large_message_bytes' must be from 1"),
    ("large_message_bytes = 1024", "large_message_bytes = true", "'large_message_bytes' must be a whole"),
    ("sweep = [512, 1024]", "sweep = [1024, 512]", "'sweep' must be 1 to 64 message sizes"),
    ("sweep = [512, 1024]", "sweep = []", "'sweep' must be 1 to 64"),
    ("sweep = [512, 1024]", "sweep = [0, 1024]", "'sweep' must be 1 to 64"),
    ("sweep = [512, 1024]", 'sweep = ["512"]', "'sweep' must be 1 to 64"),
    ("sweep = [512, 1024]", "sweep = 1024", "'sweep' must be a list"),
    ("sweep = [512, 1024]", "sweep = [256, 512]", "no size >= large_message_bytes"),
    (
        'kind = "min"\nfail = 100.0',
        'kind = "avg"\nfail = 100.0',
        "'thresholds.gemm_bf16_tflops.kind' is 'avg'",
    ),
    ('kind = "min"\nfail = 100.0', 'kind = "max"\nfail = 100.0', "kind' must be 'min': higher"),
    ("fail = 100.0", "fail = -1.0", "'thresholds.gemm_bf16_tflops.fail' must be a finite number >= 0"),
    ("fail = 100.0", "fail = nan", "'thresholds.gemm_bf16_tflops.fail' must be a finite number"),
    ("fail = 100.0", "fail = true", "'thresholds.gemm_bf16_tflops.fail' must be a finite number"),
    ("warn = 120.0", "warn = inf", "'thresholds.gemm_bf16_tflops.warn' must be a finite number"),
    ("warn = 120.0", "warn = 90.0", "'thresholds.gemm_bf16_tflops.warn' (90) must be >= fail (100)"),
    (
        'unit = "TFLOP/s"\nsource = "measured: here"\n\n[gpus',
        'unit = "TFLOP/s"\n\n[gpus',
        "missing key 'source'",
    ),
    (
        'source = "measured: here"\n\n[gpus',
        'source = ""\n\n[gpus',
        "'thresholds.gemm_bf16_tflops.source' must be",
    ),
    ('unit = "TFLOP/s"', 'unit = "TFLOP/s"\ncolour = 1', "unknown key 'colour'"),
    (
        "[thresholds.gemm_bf16_tflops]",
        "[thresholds.gemm_bf16_tflop]",
        "'thresholds.gemm_bf16_tflop': unknown metric",
    ),
    ("[gpus.2.thresholds", "[gpus.0.thresholds", "'gpus.0' must be a table named by a GPU count"),
    ("[gpus.2.thresholds", "[gpus.two.thresholds", "'gpus.two' must be a table named by a GPU count"),
    (
        "[gpus.2.thresholds.all_reduce_busbw_intra_gbps]",
        '[gpus.2]\nbackend = "gloo"\n[gpus.2.thresholds.x]',
        "unknown field 'gpus.2.backend'",
    ),
    ("fail = 10.0", "fail = -10.0", "'gpus.2.thresholds.all_reduce_busbw_intra_gbps.fail'"),
    (
        "[gpus.2.thresholds",
        "[gpus.1.thresholds",
        "'thresholds.all_reduce_busbw_intra_gbps': one GPU per node",
    ),
    (
        GOOD[GOOD.index("[thresholds") : GOOD.index("[gpus")],
        "[thresholds]\ngemm_bf16_tflops = 3\n",
        "must be a table",
    ),
    ("sweep = [512, 1024]", "sweep = [512, 1024", "not valid TOML"),
]


@pytest.mark.parametrize("old,new,words", BAD, ids=[b[2][:40] for b in BAD])
def test_each_bad_field_is_one_line_naming_file_and_field(tmp_path, old, new, words):
    assert old in GOOD
    path = tmp_path / "site.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(InputError) as e:
        load_system_file(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and words in message, message


def test_the_good_file_loads_with_its_variant(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(GOOD)
    p = load_system_file(path)
    assert p.name == "site" and p.gpus_per_node == 2 and p.threshold("all_reduce_busbw_intra_gbps")
    with pytest.raises(InputError, match=r"for nodes with 2 GPUs, not 4 \(no \[gpus.4\] variant\)"):
        load_system_file(_flat(tmp_path), gpus=4)
    assert load_system_file(_flat(tmp_path), gpus=2).gpus_per_node == 2
    path.write_text(GOOD.split("[gpus.2")[0].replace("gpus_per_node = 2\n", ""))
    with pytest.raises(InputError, match="backend 'nccl' needs 'gpus_per_node'"):
        load_system_file(path)


def _flat(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text(GOOD.split("[gpus.2")[0])
    return path


@pytest.mark.parametrize(
    "tail,words",
    [('gpus = "x"\n', "'gpus' must be a table"), ("gpus = {2 = 3}\n", "'gpus.2' must be a table")],
)
def test_gpus_must_hold_tables(tmp_path, tail, words):
    path = tmp_path / "site.toml"
    path.write_text(GOOD.split("[thresholds")[0] + tail)
    with pytest.raises(InputError, match=words):
        load_system_file(path)


@pytest.mark.parametrize(
    "content,words",
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"description = ", "not valid TOML"),
        (b"x = 1" + b"0" * 5000, "cannot read"),
    ],
)
def test_unreadable_profiles(tmp_path, content, words):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=words):
        load_system_file(path)
    with pytest.raises(InputError, match="cannot read"):
        load_system_file(tmp_path)  # a directory
    with pytest.raises(InputError, match="cannot read"):
        load_system_file(tmp_path / "missing.toml")


# --- the TOML writer ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,gpus", ALL_PROFILES)
def test_profile_toml_round_trips_every_shipped_profile(tmp_path, name, gpus):
    p = load_system(name, gpus=gpus)
    path = tmp_path / f"{name}.toml"
    path.write_text(profile_toml(p, ["a header line"]))
    again = load_system_file(path)
    assert again.thresholds == p.thresholds
    assert again == p.__class__(**{**p.__dict__, "source_file": again.source_file})


def test_profile_toml_escapes_strings(tmp_path):
    p = load_system("cpu-ci")
    odd = 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f unicode é 🚀'
    t = p.thresholds["pair_relative"]
    p = p.__class__(
        **{
            **p.__dict__,
            "description": odd,
            "thresholds": {"pair_relative": t.__class__(**{**t.__dict__, "source": odd})},
        }
    )
    path = tmp_path / "cpu-ci.toml"
    path.write_text(profile_toml(p, ["header with\nnewline"]))
    again = load_system_file(path)
    assert again.description == odd.strip() and again.thresholds["pair_relative"].source == odd.strip()


# --- results files and baseline ------------------------------------------------------------------


def _doc(system, results, **meta):
    return {
        "schema": "cordee.preflight/1",
        "system": system,
        "started": "2026-11-24T08:00:00+00:00",
        "results": [r.as_dict() for r in results],
        **meta,
    }


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def _gemm(node, rank, value, status="ok"):
    return Result(
        "compute.gemm", status, node, rank, value, None, "TFLOP/s", "", data={"metric": "gemm_bf16_tflops"}
    )


def _h200_runs(tmp_path):
    """Two runs on two 2-GPU H200 nodes: GEMM, a collective sweep result, health results."""
    gemm = {"a.json": [600.0, 700.0, 650.0, 640.0], "b.json": [660.0, 1.0, 690.0, 680.0]}
    paths = []
    for name, values in gemm.items():
        results = [_gemm(f"n{i // 2}", i, v) for i, v in enumerate(values)]
        results += [
            Result(
                "collective.all_reduce.intra",
                "ok",
                "n0",
                0,
                300.0 if name == "a.json" else 320.0,
                None,
                "GB/s",
                data={"metric": "all_reduce_busbw_intra_gbps", "rows": []},
            ),
            Result("gpu.ecc", "ok", "n0", None, 0.0, 0.0, "errors", data={"metric": "ecc_uncorrected"}),
            Result("gpu.temperature", "ok", "n0", None, 39.0, 65.0, "C", data={"metric": "gpu_temp_idle_c"}),
            _gemm("n1", 3, 5000.0, status="error"),  # an error is no measurement
            _gemm("n1", 3, None, status="ok"),  # nor is a missing value
            Result("straggler.work", "ok", "n1", 3, 0.5, None, "s", data={"metric": "straggler_time_s"}),
        ]
        paths.append(_write(tmp_path, name, _doc("h200-sxm", results)))
    return paths, [v for vs in gemm.values() for v in vs]


def test_baseline_round_trip(tmp_path):
    paths, gemm_values = _h200_runs(tmp_path)
    docs = load_results(paths)
    text = baseline(docs, tolerance=0.2, name="site-h200")
    out = tmp_path / "site-h200.toml"
    out.write_text(text)
    p = load_system_file(out)
    base = load_system("h200-sxm", gpus=2)  # two ranks on every node: the 2-GPU variant
    assert p.name == "site-h200" and p.gpus_per_node == 2 and p.sweep == base.sweep
    gemm = p.threshold("gemm_bf16_tflops")
    median = statistics.median(gemm_values)  # 655: the 1.0 outlier does not move it much
    assert gemm.fail == pytest.approx(median * 0.8, rel=1e-3) and gemm.warn == pytest.approx(
        median * 0.9, rel=1e-3
    )
    assert "median 655 of 8 results from a.json, b.json" in gemm.source
    ar = p.threshold("all_reduce_busbw_intra_gbps")
    assert ar.fail == pytest.approx(310.0 * 0.8, rel=1e-3) and ar.unit == "GB/s"
    # health limits and everything not measured are kept from the profile the runs used
    for metric in ("ecc_uncorrected", "gpu_temp_idle_c", "straggler_ratio", "all_gather_busbw_intra_gbps"):
        assert p.threshold(metric) == base.threshold(metric)
    assert "straggler_time_s" not in text and text.startswith(
        "# site-h200: written by cordee preflight baseline"
    )


def test_baseline_of_a_cpu_run_is_a_cpu_profile(tmp_path):
    results = [
        Result("compute.gemm", "ok", "n0", r, 10.0 + r, None, "GFLOP/s", data={"metric": "cpu_gemm_gflops"})
        for r in range(3)
    ]
    docs = load_results([_write(tmp_path, "cpu.json", _doc("cpu-ci", results))])
    out = tmp_path / "ci.toml"
    out.write_text(baseline(docs))
    p = load_system_file(out)
    assert p.backend == "gloo" and p.gpus_per_node is None
    assert p.threshold("cpu_gemm_gflops").fail == pytest.approx(11.0 * 0.9)
    assert p.threshold("pair_relative") == load_system("cpu-ci").threshold("pair_relative")


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"tolerance": 0}, "tolerance must be a number > 0 and < 1"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"tolerance": True}, "tolerance"),
        ({"tolerance": "0.1"}, "tolerance"),
        ({"name": "Bad Name"}, "baseline name 'Bad Name'"),
        ({"name": "../x"}, "baseline name"),
    ],
)
def test_baseline_refuses_bad_arguments(tmp_path, kwargs, words):
    paths, _ = _h200_runs(tmp_path)
    with pytest.raises(InputError, match=words):
        baseline(load_results(paths), **kwargs)


def test_baseline_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(InputError, match="at least one"):
        baseline([])
    a = _write(tmp_path, "a.json", _doc("h200-sxm", [_gemm("n0", 0, 600.0)]))
    b = _write(tmp_path, "b.json", _doc("cpu-ci", [_gemm("n0", 0, 600.0)]))
    with pytest.raises(InputError, match="different systems"):
        baseline(load_results([a, b]))
    c = _write(tmp_path, "c.json", _doc("my-site", [_gemm("n0", 0, 600.0)]))
    with pytest.raises(InputError, match="ran with system 'my-site', not a shipped profile"):
        baseline(load_results([c]))
    d = _write(tmp_path, "d.json", _doc("h200-sxm", [Result("gpu.ecc", "ok", "n0", None, 0.0)]))
    with pytest.raises(InputError, match="no measured metric in d.json"):
        baseline(load_results([d]))


@pytest.mark.parametrize(
    "content,words",
    [
        ("{", "not JSON"),
        (
            '{"schema": "cordee.bench/1", "results": []}',
            "schema is 'cordee.bench/1', expected 'cordee.preflight/1'",
        ),
        ("[1, 2]", "schema is 'list'"),
        ('{"schema": "cordee.preflight/1"}', "'results' must be a list"),
        ('{"schema": "cordee.preflight/1", "results": [{"check": "x", "status": "great"}]}', "results[0]: "),
        (
            '{"schema": "cordee.preflight/1", "results": [{"check": "x", "status": "ok", "rank": "0"}]}',
            "results[0]",
        ),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_load_results_refuses_bad_files(tmp_path, content, words):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(InputError) as e:
        load_results([path])
    assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_load_results_refuses_unreadable_files(tmp_path):
    (tmp_path / "latin1.json").write_bytes(b'{"x": "\xe9"}')
    for path, words in [
        (tmp_path / "missing.json", "cannot read"),
        (tmp_path, "a directory"),
        (tmp_path / "latin1.json", "not UTF-8"),
    ]:
        with pytest.raises(InputError, match=words):
            load_results([path])


def test_load_results_keeps_the_document_and_notes_its_file(tmp_path):
    path = _write(tmp_path, "a.json", _doc("cpu-ci", [_gemm("n0", 0, 1.0)], level="standard"))
    [doc] = load_results([path])
    assert doc[systems.FILE_KEY] == path and doc["level"] == "standard" and len(doc["results"]) == 1


# --- suggest_system ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpu,count,system",
    [
        ("NVIDIA H200", 8, "h200-sxm"),
        ("NVIDIA H100 80GB HBM3", 4, "h100-sxm"),
        ("NVIDIA GH200 120GB", 4, "alps-gh200"),
        (None, 0, "cpu-ci"),
        ("NVIDIA H200", 0, "cpu-ci"),
        ("", 2, "cpu-ci"),
    ],
)
def test_suggest_system(gpu, count, system):
    assert suggest_system(gpu, count) == system
    assert system in list_systems()


@pytest.mark.parametrize("gpu", ["NVIDIA H100 PCIe", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB"])
def test_no_profile_is_suggested_for_other_gpus(gpu):
    with pytest.raises(InputError, match="no system profile describes GPU") as e:
        suggest_system(gpu, 4)
    assert "h200-sxm" in str(e.value)


def test_baseline_of_runs_judged_with_a_profile_file(tmp_path):
    site = tmp_path / "my-site.toml"
    site.write_text(profile_toml(load_system("h200-sxm", gpus=2)))
    run = _write(tmp_path, "run.json", _doc("my-site", [_gemm("n0", 0, 600.0), _gemm("n0", 1, 700.0)]))
    out = tmp_path / "my-site-2.toml"
    out.write_text(baseline(load_results([run]), name="my-site-2", base=load_system_file(site)))
    p = load_system_file(out)
    assert p.threshold("gemm_bf16_tflops").fail == pytest.approx(650.0 * 0.9)
    assert "baseline of my-site from run.json" in p.description
    assert p.threshold("all_reduce_busbw_intra_gbps") == load_system("h200-sxm", gpus=2).threshold(
        "all_reduce_busbw_intra_gbps"
    )
