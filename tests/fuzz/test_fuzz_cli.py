"""Every verb of the real `cordee` command under hostile arguments, environments and files.

Each test runs its verb `examples` times (twelve times as many with CORDEE_FUZZ=long, `make fuzz`;
fuzz/driver.py), checks the contract on every run (fuzz/contract.py) and fails at its end with
every violation it saw, grouped by root cause.
"""

from __future__ import annotations

import json
import shlex
import subprocess

import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzz.artifacts import (
    EXPORT_OUT,
    GOOD_MESSAGES,
    chat_data,
    chat_inputs,
    chat_model_dirs,
    chat_model_files,
    chat_overrides,
    checkpoints,
    hf_dirs,
    metrics_files,
    pack_sources,
    verify_images,
)
from fuzz.contract import Violation
from fuzz.documents import (
    TRAIN_NAMES,
    Doc,
    edf_args,
    nccl_conf,
    prepare_inputs,
    results_args,
    spec_args,
    specs,
    system_profiles,
    token_data,
    tokenizer_files,
    toml_value,
    train_config_args,
    train_overrides,
)
from fuzz.driver import contract, flag, fuzz, option
from fuzz.environments import PROFILES, launch_env, net_env, profile_env
from fuzz.hostile import (
    NASTY_TEXT,
    byte_sizes,
    durations,
    hostlists,
    matrix_orders,
    numbers,
    paths,
    text,
    timeouts,
    values,
)
from fuzz.journal import JOURNAL
from fuzz.runner import DEADLINE_S, Command, run, run_in, sandbox
from fuzz.sandbox import Directory, Fifo, Symlink


@contract(examples=30)
@given(env=launch_env(), as_json=flag("--json"))
def test_env_show(env, as_json):
    fuzz(Command("env show", ("env", "show", *as_json), env=env))


@contract(examples=30)
@given(
    env=launch_env(most=1),
    profile_vars=profile_env(),
    as_json=flag("--json"),
    profile=option("--profile", st.sampled_from(PROFILES) | text() | paths()),
)
def test_env_check(env, profile_vars, as_json, profile):
    fuzz(
        Command(
            "env check", ("env", "check", *profile, *as_json), env={**env, **profile_vars}, report_verb=True
        )
    )


LAUNCH_OPTIONS = st.lists(
    st.one_of(
        option("--profile", st.sampled_from(PROFILES) | text()),
        option("--nproc-per-node", numbers()),
        option("--bind", st.sampled_from(["auto", "none"]) | text()),
        option("--grace", timeouts()),
        st.sampled_from([["-v"], ["-q"], ["--verbose"]]),
    ),
    max_size=3,
).map(lambda parts: [token for part in parts for token in part])


@contract(examples=30)
@given(
    env=launch_env(),
    profile_vars=profile_env(),
    options=LAUNCH_OPTIONS,
    cmd=st.sampled_from([["--", "true"], ["--", "true", "x"], ["true"], ["--"], []])
    | text().map(lambda c: ["--", c]),
)
def test_launch_dry_run(env, profile_vars, options, cmd):
    fuzz(Command("launch --dry-run", ("launch", "--dry-run", *options, *cmd), env={**env, **profile_vars}))


# One input each that no launch can accept, so that the real (not dry) launch never starts CMD.
BREAKERS = [
    ({}, ["--nproc-per-node", "¹"]),
    ({}, ["--nproc-per-node", "9" * 5000]),
    ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "x"}, []),
    ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_TASKS_PER_NODE": "1(x1000000000)"}, []),
    ({"CUDA_VISIBLE_DEVICES": "¹"}, []),
    ({"CORDEE_PROFILE": "no-such-profile\n"}, []),
    ({"RANK": "5", "WORLD_SIZE": "2"}, []),
    ({"MASTER_PORT": "65536"}, []),
]


@contract(examples=10)
@given(env=launch_env(), options=LAUNCH_OPTIONS, breaker=st.sampled_from(BREAKERS))
def test_launch_with_bad_input(env, options, breaker):
    env_breaker, args_breaker = breaker
    args = ("launch", *options, *args_breaker, "--", "true")
    fuzz(Command("launch", args, env={**env, **env_breaker}))


@contract(examples=30)
@given(exprs=st.lists(hostlists(), min_size=1, max_size=2), as_json=flag("--json"))
def test_hostlist_expand(exprs, as_json):
    fuzz(Command("hostlist expand", ("hostlist", "expand", *exprs, *as_json)))


@contract(examples=20)
@given(
    hosts=st.lists(hostlists() | st.just("-"), min_size=0, max_size=4),
    stdin=hostlists(),
    as_json=flag("--json"),
)
def test_hostlist_compress(hosts, stdin, as_json):
    command = Command("hostlist compress", ("hostlist", "compress", *hosts, *as_json), stdin=stdin.encode())
    fuzz(command)


ROOTS = st.sampled_from(
    ["{ROOT}", "{ROOT}", "{CWD}/fifo", "{CWD}/dir.yaml", "relative", "{CWD}/" + "r" * 300]
)


@contract(examples=6)
@given(extra=st.lists(specs(), max_size=2), root=ROOTS, as_json=flag("--json"))
def test_image_list(extra, root, as_json):
    files = {k.replace("cwd/", "root/images/"): v for doc in extra for k, v in doc.files.items()}
    command = Command("image list", ("image", "list", *as_json), env={"CORDEE_ROOT": root}, files=files,
                      error_lines=None)  # fmt: skip
    fuzz(command)


@contract(examples=25)
@given(docs=st.lists(spec_args(), min_size=0, max_size=3), all_=flag("--all"), root=ROOTS)
def test_image_validate(docs, all_, root):
    files = {k: v for doc in docs for k, v in doc.files.items()}
    args = ("image", "validate", *(doc.arg for doc in docs), *all_)
    fuzz(Command("image validate", args, env={"CORDEE_ROOT": root}, files=files, error_lines=None))


# Where --out may point: new places, an existing file, unwritable places, a FIFO, too long a name,
# and a folder holding a stale build.json that lists files reached through symlinks to outside.
STALE = {
    "cwd/stale/build.json": '{"files": ["Containerfile", "link/victim.txt", "victim-link", "../x", "/abs"]}',
    "cwd/stale/link": Symlink("{SENTINEL}"),
    "cwd/stale/victim-link": Symlink("{SENTINEL}/victim.txt"),
}
OUT_DIRS = ["{CWD}/out", "out/a/b", "{CWD}/empty.yaml", "/proc/cordee-out", "{CWD}/fifo",
            "{CWD}/" + "o" * 300, "{CWD}/stale", "", "/dev/null/x", "{CWD}/a\nb"]  # fmt: skip


@contract(examples=15)
@given(doc=spec_args(), out=st.none() | st.just("{CWD}/out") | st.sampled_from(OUT_DIRS),
       all_=st.sampled_from([False, False, True]))  # fmt: skip
def test_image_render(doc, out, all_):
    """Also the consistency of render and check: an EDF that render wrote passes `edf check`."""
    args = ["image", "render", *(["--all"] if all_ else [doc.arg])]
    args += ["--out", out] if out is not None else []
    files = {**doc.files, **(STALE if out == "{CWD}/stale" else {})}
    may_write = (out,) if out else ("{ROOT}/build",)
    command = Command("image render", tuple(args), files=files, may_write=may_write)
    with sandbox() as box:
        outcome = run_in(box, command)
        JOURNAL.record(outcome)
        if outcome.returncode == 0 and not all_:
            written = box.cwd.joinpath(box.expand(out)) if out else box.run / "root/build"
            for edf in sorted(written.glob("*.toml" if out else "*/*.toml")):
                check = Command("edf check (rendered)", ("edf", "check", str(edf)), report_verb=True)
                rendered = run_in(box, check)
                JOURNAL.record(rendered)
                errors = rejected(rendered)
                if errors:
                    detail = f"`image render` wrote an EDF that `edf check` rejects: {errors[:3]}"
                    violation = Violation("consistency", "image render -> edf check: EDF rejected", detail)
                    JOURNAL.add(violation, outcome)


def rejected(check) -> list[str]:
    """The errors `edf check` found in a rendered EDF, but for variables this environment lacks
    (edf.env and mounts may name ${VAR}s that only the job's environment defines)."""
    errors = [line for line in check.stdout.splitlines() if ": error: " in line]
    return [line for line in errors if "undefined variable" not in line]


@contract(examples=30)
@given(
    doc=edf_args(),
    as_json=flag("--json"),
    env=st.fixed_dictionaries(
        {},
        optional={"EDF_PATH": paths() | text() | st.just("{EDF}:{CWD}"), "SCRATCH": text(), "HOME": paths()},
    ),
)
def test_edf_check(doc, as_json, env):
    fuzz(
        Command("edf check", ("edf", "check", doc.arg, *as_json), env=env, files=doc.files, report_verb=True)
    )


OUT_FILES = ["{CWD}/out.toml", "{CWD}/empty.toml", "{CWD}/dir.toml", "/proc/cordee.toml", "{CWD}/fifo.toml",
             "{CWD}/" + "o" * 300 + ".toml", "{CWD}/missing/x.toml", "", "{CWD}/a\nb.toml"]  # fmt: skip


@contract(examples=15)
@given(
    doc=spec_args(),
    sqsh=option("--sqsh", paths() | text() | st.just("{CWD}/x.sqsh")),
    out=st.none() | st.sampled_from(OUT_FILES),
)
def test_edf_render(doc, sqsh, out):
    args = ("edf", "render", doc.arg, *sqsh, *(["--out", out] if out is not None else []))
    fuzz(Command("edf render", args, files=doc.files, may_write=(out,) if out else ()))


@contract(examples=10)
@given(
    doc=edf_args(),
    timeout=option("--timeout", timeouts()),
    host_env=flag("--no-host-env"),
    cmd=st.sampled_from([["--", "true"], ["--"], [], ["true"]]),
)
def test_edf_run(doc, timeout, host_env, cmd):
    """PATH holds no podman: whatever the input, nothing can start a container."""
    args = ("edf", "run", *timeout, *host_env, doc.arg, *cmd)
    fuzz(Command("edf run", args, env={"PATH": "{RUN}/bin"}, files=doc.files))


def _net_deadline(timeout: list[str]) -> float:
    try:
        seconds = float(timeout[1])
    except (IndexError, ValueError):
        seconds = 20.0  # the default, and what a bad value would have been
    return DEADLINE_S + 3 * (seconds if 0 < seconds <= 20 else 20)


@contract(examples=10)
@given(
    env=net_env(),
    conf=nccl_conf(),
    as_json=flag("--json"),
    provider=option("--provider", st.sampled_from(["tcp", "cxi", "shm"]) | text()),
    timeout=option("--timeout", timeouts()) | st.floats(0.2, 3).map(lambda f: ["--timeout", f"{f:.2f}"]),
)
def test_net_show(env, conf, as_json, provider, timeout):
    args = ("net", "show", *as_json, *provider, *timeout)
    command = Command("net show", args, env=env, files={"cwd/nccl.conf": conf}, report_verb=True,
                      deadline=_net_deadline(timeout))  # fmt: skip
    fuzz(command)


@st.composite
def one_broken(draw, good: dict, bad: dict) -> list[str]:
    """Command-line words from options that are all acceptable but, three runs in four, one: a
    run gets past the other options' checks to the code the broken one reaches. `good` and `bad`
    map an option to strategies of its words ([] leaves it out)."""
    chosen = {name: draw(strategy) for name, strategy in good.items()}
    if draw(st.integers(0, 3)):
        name = draw(st.sampled_from(sorted(bad)))
        chosen[name] = draw(bad[name])
    return [word for words in chosen.values() for word in words]


def words(*choices: list[str]) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(list(choices))


def _preflight_report(outcome):
    """A preflight's exit 1 or 2 may be its report of warnings or failures (progress lines on
    stderr, the table on stdout): such a run is held to the rules of a report, not of an error."""
    if outcome.returncode in (1, 2) and "summary: " in outcome.stdout + outcome.stderr:
        return outcome._replace(command=outcome.command._replace(error_lines=None))
    return outcome


PREFLIGHT_OUT = ["{CWD}/out", "{CWD}/dir.toml", "/proc/cordee.json", "{CWD}/fifo", "{CWD}/missing/x", "",
                 "{CWD}/" + "o" * 300, "{CWD}/a\nb", "-"]  # fmt: skip
OUTPUT_KINDS = ["json", "junit", "exclude-file", "plot"]
CHECK_PATTERNS = ["env.profile", "env.*", "gpu.*", "*", "env.profile,x"]
REJECTED_NPROC = [["--nproc", v] for v in ["0", "-1", "1025", "¹", "9" * 5000, "x", ""]] + [["--nproc"]]
PREFLIGHT_GOOD = {
    "profile": words([], ["--system", "cpu-ci"], ["--thresholds", "profile.toml"],
                     ["--system", "alps-gh200", "--device", "cpu"]),
    "device": words([], ["--device", "cpu"]),
    "checks": words([], *(["--checks", p] for p in CHECK_PATTERNS)),
    "nproc": words(["--nproc", "1"]),
    "outputs": words([], ["--json", "-"], ["--json={CWD}/r.json"], ["--plot={CWD}/p.png"],
                     ["--junit=r.xml", "--exclude-file=bad.txt"]),
    "quiet": flag("-q"),
}  # fmt: skip
PREFLIGHT_BAD = {
    "profile": option("--system", text() | paths()) | option("--thresholds", text() | paths())
    | words(["--system", "cpu-ci", "--thresholds", "profile.toml"]),
    "device": option("--device", st.just("cuda") | text()),
    "checks": option("--checks", text()),
    "nproc": st.sampled_from(REJECTED_NPROC),
    "timeout": option("--timeout", timeouts()),
    "stall": option("--stall-timeout", timeouts()),
    "outputs": st.lists(st.builds(lambda k, o: f"--{k}={o}", st.sampled_from(OUTPUT_KINDS),
                                  st.sampled_from(PREFLIGHT_OUT)), min_size=1, max_size=2),
}  # fmt: skip


def _written(args: list[str]) -> tuple[str, ...]:
    """The files that --json=FILE and the like name."""
    return tuple(a.split("=", 1)[1] for a in args if a.startswith(tuple(f"--{k}=" for k in OUTPUT_KINDS)))


@contract(examples=12)
@given(options=one_broken(PREFLIGHT_GOOD, PREFLIGHT_BAD), profile=system_profiles(), env=profile_env())
def test_preflight(options, profile, env):
    """The quick level on one CPU rank (--level standard would run GEMMs and collectives).
    --json=FILE, not --json FILE: the contract reads stdout as JSON only for `--json -`."""
    args = ("preflight", "--level", "quick", *options)
    command = Command("preflight", args, env=env, files=profile.files, may_write=_written(options),
                      report_verb=True, deadline=2 * DEADLINE_S)  # fmt: skip
    JOURNAL.record(_preflight_report(run(command)))


BASELINE_GOOD = {
    "tolerance": words([], ["--tolerance", "0.1"], ["--tolerance", "0.5"]),
    "name": words([], ["--name", "base"], ["--name", "my.profile"]),
    "out": words([], ["--out", "{CWD}/out.toml"]),
}
BASELINE_BAD = {
    "tolerance": option("--tolerance", st.sampled_from(["0", "0.99", "1e-9", "nan"]) | numbers() | text()),
    "name": option("--name", text()),
    "out": st.sampled_from(OUT_FILES).map(lambda out: ["--out", out]),
}


@contract(examples=12)
@given(results=results_args(), options=one_broken(BASELINE_GOOD, BASELINE_BAD))
def test_preflight_baseline(results, options):
    """Also the consistency of baseline and --thresholds: a profile baseline writes is one that
    `cordee preflight --thresholds` reads."""
    files, results_paths = results
    out = options[options.index("--out") + 1] if "--out" in options[:-1] else None
    command = Command("preflight baseline", ("preflight", "baseline", *results_paths, *options), files=files,
                      may_write=(out,) if out else ())  # fmt: skip
    with sandbox() as box:
        outcome = run_in(box, command)
        JOURNAL.record(outcome)
        if outcome.returncode != 0 or "--help" in options:
            return
        if out is None:
            out = "{CWD}/stdout.toml"
            box.cwd.joinpath("stdout.toml").write_text(outcome.stdout)
        quick = ("--level", "quick", "--nproc", "1", "--device", "cpu", "--checks", "env.profile", "-q")
        check = Command("preflight --thresholds (baseline)", ("preflight", "--thresholds", out, *quick),
                        report_verb=True, deadline=2 * DEADLINE_S)  # fmt: skip
        loaded = _preflight_report(run_in(box, check))
        JOURNAL.record(loaded)
        if loaded.returncode == 2 and "summary: " not in loaded.stdout + loaded.stderr:
            detail = f"`preflight baseline` wrote a profile that --thresholds rejects: {loaded.stderr[-300:]}"
            JOURNAL.add(
                Violation("consistency", "preflight baseline -> --thresholds: rejected", detail), outcome
            )


CI_GOOD = {
    "nodes": words([], ["--nodes", "4"]),
    "environment": words([], ["--environment", "envs/x.toml"], ["--environment", "/a/b.toml"]),
    "level": words([], ["--level", "quick"], ["--level", "long"]),
    "system": words([], ["--system", "h200-sxm"], ["--system", "alps-gh200"]),
    "slurm": words([], ["--partition", "normal", "--account", "a-01"]),
    "time": words([], ["--time", "00:30:00"], ["--time", "1-00:00:00"]),
    "ci": words([], ["--stage", "test", "--job", "check:nodes", "--tag", "a", "--tag", "b.c"]),
    "out": words([], ["--out", "{CWD}/ci.yml"]),
}
CI_BAD = {
    "nodes": option("--nodes", numbers()),
    "environment": option("--environment", st.just("a..b") | text() | paths()),
    "level": option("--level", text()),
    "system": option("--system", text() | paths()),
    "slurm": option("--partition", text()) | option("--account", text()),
    "time": option("--time", durations()),
    "ci": option("--stage", text()) | option("--job", text()) | option("--tag", text()),
    "out": st.sampled_from(OUT_FILES).map(lambda out: ["--out", out]),
}


@contract(examples=10)
@given(options=one_broken(CI_GOOD, CI_BAD))
def test_preflight_ci_template(options):
    """Also that what it writes is YAML whose script lines a shell can split."""
    out = options[options.index("--out") + 1] if "--out" in options[:-1] else None
    command = Command(
        "preflight ci-template", ("preflight", "ci-template", *options), may_write=(out,) if out else ()
    )
    outcome = fuzz(command)
    if outcome.returncode == 0 and out is None and "--help" not in options:
        try:
            job = next(v for v in yaml.safe_load(outcome.stdout).values() if isinstance(v, dict))
            [shlex.split(line) for line in job["script"]]
        except Exception as e:  # noqa: BLE001 (any failure to read it back is the finding)
            detail = f"ci-template wrote YAML that does not read back: {type(e).__name__}: {e}"
            JOURNAL.add(Violation("consistency", "ci-template -> yaml: unreadable", detail), outcome)


# Every benchmark runs once (--iters 1 --warmup 0) on a small size, each op's sweep bounded by
# --timeout 8, unless the broken option says otherwise: torch's import alone takes seconds.
BENCH_GOOD = {
    "device": words([], ["--device", "cpu"]),
    "timeout": words([], ["--timeout", "30"]),
    "json": flag("--json"),
}
BENCH_BAD = {
    "iters": option("--iters", st.sampled_from(["0", "100001"]) | numbers()),
    "warmup": option("--warmup", st.sampled_from(["-1", "10001"]) | numbers()),
    "timeout": option("--timeout", timeouts()),
    "device": option("--device", st.sampled_from(["cuda", "cuda:1", "cuda:x"]) | text()),
}


def _bench(sub: str, options: list[str], env: dict | None = None) -> None:
    args = ("bench", sub, "--iters", "1", "--warmup", "0", "--timeout", "8", *options)
    fuzz(Command(f"bench {sub}", args, env=env or {}, deadline=3 * DEADLINE_S))


@contract(examples=5)
@given(
    options=one_broken(
        {**BENCH_GOOD, "sizes": words(["--sizes", "16"], ["--sizes", "1,64"]),
         "dtype": words([], ["--dtype", "fp32"])},
        {**BENCH_BAD, "sizes": matrix_orders().map(lambda s: ["--sizes", s]),
         "dtype": option("--dtype", text())},
    )
)  # fmt: skip
def test_bench_gemm(options):
    _bench("gemm", options)


@contract(examples=5)
@given(
    options=one_broken(
        {**BENCH_GOOD, "sizes": words(["--sizes", "1K"], ["--sizes", "3,64K"])},
        {**BENCH_BAD, "sizes": byte_sizes().map(lambda s: ["--sizes", s])},
    )
)  # fmt: skip
def test_bench_hbm(options):
    _bench("hbm", options)


COLLECTIVES_GOOD = {
    **BENCH_GOOD,
    "sizes": words(
        ["--sizes", "1K"], ["--sizes", "3,64K"], ["--min-bytes", "1K", "--max-bytes", "4K", "--factor", "2"]
    ),
    "ops": words(["--ops", "all_reduce"], ["--ops", "all_gather,reduce_scatter,alltoall"]),
    "more": words([], ["--no-check"], ["--dtype", "fp16"]),
}
COLLECTIVES_BAD = {
    **BENCH_BAD,
    "sizes": byte_sizes().map(lambda s: ["--sizes", s]) | words(["--sizes", "1K", "--min-bytes", "1K"],
        ["--min-bytes", "4K", "--max-bytes", "1K"], ["--factor", "1"], ["--max-bytes", "65G"]),
    "ops": option("--ops", st.sampled_from(["sendrecv", "all_reduce,,", ""]) | text()),
    "more": option("--dtype", st.just("int8") | text()),
    "env": st.just(["FAULT"]),  # the test-only fault switch, broken in the environment: see below
}  # fmt: skip


@contract(examples=6)
@given(options=one_broken(COLLECTIVES_GOOD, COLLECTIVES_BAD), fault=text() | st.just("wrong-data:0"))
def test_bench_collectives(options, fault):
    """One rank: a group of one forms without a peer."""
    env = {"CORDEE_PREFLIGHT_FAULT": fault} if "FAULT" in options else {}
    _bench("collectives", [o for o in options if o != "FAULT"], env)


@contract(examples=15)
@given(
    broken=st.sampled_from(["config", "overrides", "data", "env", None]),
    config=train_config_args(),
    overrides=train_overrides(),
    data=token_data(),
    env=launch_env(most=2),
    good_config=st.sampled_from(TRAIN_NAMES),
    good_overrides=words([], ["steps=3", "data.seed=7"], ["model.n_layers=1", "checkpoint.dir={CWD}/ck"]),
)
def test_train_dry_run(broken, config, overrides, data, env, good_config, good_overrides):
    """One thing broken at a time: the config, the overrides, the data (shards with broken
    headers, index.json), the launch environment."""
    config = config if broken == "config" else Doc({}, good_config)
    args = [
        "train",
        "--dry-run",
        "--config",
        config.arg,
        *(overrides if broken == "overrides" else good_overrides),
    ]
    args += [f"data.path={data.arg}"] if broken == "data" else []
    files = {**config.files, **(data.files if broken == "data" else {})}
    fuzz(Command("train --dry-run", tuple(args), env=env if broken == "env" else {}, files=files))


PREPARE_OUT = ["{CWD}/out", "a/b/c", "{CWD}/dir.toml", "{CWD}/fifo", "/proc/x", "", ".", "{CWD}/" + "o" * 300,
               "{CWD}/a\nb", "/dev/null/x", "{CWD}/" + "d/" * 2100 + "x"]  # fmt: skip
EARLIER_OUT = [{"cwd/out/index.json": '{"schema": "cordee.data/1"}', "cwd/out/old.tok": "x"},
               {"cwd/out/keep": "x"}, {"cwd/out/index.json": Fifo()},
               {"cwd/out": Symlink("{SENTINEL}")}]  # fmt: skip
GOOD_INPUT = ({"cwd/in.jsonl": '{"text": "one"}\n\n{"text": "two é"}\n', "cwd/in.txt": "three\n"},
              ["{CWD}/in.jsonl", "in.txt"])  # fmt: skip
PREPARE_GOOD = {
    "format": words([], ["--format", "auto"], ["--format", "lines"]),
    "shards": words([], ["--shard-tokens", "4"]),
    "flags": st.lists(st.sampled_from(["--overwrite", "--quiet", "--json"]), max_size=3, unique=True),
}
PREPARE_BAD = {
    "format": option("--format", text()) | words(["--format", "jsonl"]),
    "key": option("--key", st.just("other") | text()),
    "shards": option("--shard-tokens", numbers()),
    "eos": option("--eos-token", st.just("</s>") | text()),
    "inputs": st.just(["INPUTS"]),  # replaced by hostile inputs in the test
    "out": st.just(["OUT"]),
    "earlier": st.just(["EARLIER"]),
    "tokenizer": st.just(["TOKENIZER"]),
}


@contract(examples=12)
@given(
    options=one_broken(PREPARE_GOOD, PREPARE_BAD),
    inputs=prepare_inputs(),
    out=st.sampled_from(PREPARE_OUT),
    earlier=st.sampled_from(EARLIER_OUT),
    tokenizer=tokenizer_files(),
)
def test_data_prepare(options, inputs, out, earlier, tokenizer):
    """Also the consistency of prepare and train: what prepare writes, `cordee train --dry-run`
    reads (the tiny config, its vocabulary as large as the data's)."""
    files, args = inputs if "INPUTS" in options else GOOD_INPUT
    out = out if "OUT" in options else "out"
    files = {**files, **(earlier if "EARLIER" in options else {})}
    if "TOKENIZER" in options:
        files, options = {**files, **tokenizer.files}, [*options, "--tokenizer", tokenizer.arg]
    options = [o for o in options if o not in ("INPUTS", "OUT", "EARLIER", "TOKENIZER")]
    command = Command(
        "data prepare", ("data", "prepare", *args, "-o", out, *options), files=files, may_write=(out,)
    )
    with sandbox() as box:
        outcome = run_in(box, command)
        JOURNAL.record(outcome)
        index = box.cwd.joinpath(box.expand(out or "."), "index.json")
        if outcome.returncode != 0 or not index.is_file():  # --help writes nothing
            return
        written = json.loads(index.read_text())
        vocab = max(2, written["vocab_size"])
        seq_len = max(1, min(64, written["tokens"] - 1))  # one whole sample: a document is >= 2 tokens
        args = (
            "train",
            "--config",
            "tiny",
            "--dry-run",
            f"data.path={box.expand(out)}",
            f"model.vocab_size={vocab}",
            f"seq_len={seq_len}",
        )
        read = run_in(box, Command("train --dry-run (prepared)", args))
        JOURNAL.record(read)
        if read.returncode != 0:
            detail = f"`data prepare` wrote data that `train --dry-run` rejects: {read.stderr[-300:]}"
            JOURNAL.add(Violation("consistency", "data prepare -> train: data rejected", detail), outcome)


JOB_GOOD = {
    "name": words(["--name", "run"], ["--name", "a.b-c_1"]),
    "nodes": words(["--nodes", "2"]),
    "tasks": words(["--ntasks-per-node", "4"]),
    "time": words(["--time", "01:00:00"], ["--time", "1-00:00:00"]),
    "step": words(["--config", "tiny"], ["--config", "./my config.toml", "--set", "model.n_layers=4"],
                  ["--command", "python 'x y.py' --z 1"]),
    "extra": words([], ["--signal", "USR2", "--signal-before", "300"], ["--chain", "requeue"],
                   ["--environment", "cordee", "--account", "a1", "--output", "%x-%j.out"],
                   ["--state-dir", "/scratch/$USER/x y"]),
    "out": words([], ["--out", "{CWD}/job.sh"]),
}  # fmt: skip
JOB_BAD = {
    "name": option("--name", text()),
    "nodes": option("--nodes", numbers()),
    "tasks": option("--ntasks-per-node", numbers()),
    "time": option("--time", durations()),
    "step": option("--config", text()) | option("--command", text()) | option("--set", text())
    | words([], ["--config", "tiny", "--command", "true"]),
    "extra": option("--signal", st.sampled_from(["SIGKILL", "9", "USR1"]) | text())
    | option("--signal-before", numbers()) | option("--chain", text()) | option("--max-failures", numbers())
    | option("--state-dir", text() | paths()) | option("--environment", text())
    | option("--account", text()) | option("--partition", text()) | option("--output", text()),
    "out": st.sampled_from(OUT_FILES).map(lambda out: ["--out", out]),
}  # fmt: skip


@contract(examples=12)
@given(options=one_broken(JOB_GOOD, JOB_BAD))
def test_job_render(options):
    """Also that the script it writes is one bash can parse (`bash -n`)."""
    out = options[options.index("--out") + 1] if "--out" in options[:-1] else None
    with sandbox() as box:
        outcome = run_in(
            box, Command("job render", ("job", "render", *options), may_write=(out,) if out else ())
        )
        JOURNAL.record(outcome)
        if outcome.returncode != 0 or "--help" in options:
            return
        script = outcome.stdout if not out else box.cwd.joinpath(box.expand(out)).read_text()
        parsed = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
        if parsed.returncode != 0:
            detail = f"`job render` wrote a script bash cannot parse: {parsed.stderr[-300:]}"
            JOURNAL.add(Violation("consistency", "job render -> bash -n: syntax error", detail), outcome)


# --- storage and fine-tuning verbs ---------------------------------------------------------------

CKPT_GOOD = {
    "cost": words(["--cost", "10"], ["--cost", "0.5"]),
    "mtbf": words(["--mtbf", "24"], ["--nodes", "64", "--node-mtbf", "5000"]),
    "step": words([], ["--step-time", "1.5"]),
    "json": flag("--json"),
}
CKPT_BAD = {
    "cost": option("--cost", numbers()) | words([]),
    "mtbf": option("--mtbf", numbers()) | option("--node-mtbf", numbers()) | option("--nodes", numbers())
    | words(["--mtbf", "1", "--nodes", "2", "--node-mtbf", "3"], ["--node-mtbf", "3"], []),
    "step": option("--step-time", numbers()),
}  # fmt: skip


@contract(examples=10)
@given(options=one_broken(CKPT_GOOD, CKPT_BAD))
def test_ckpt_interval(options):
    fuzz(Command("ckpt interval", ("ckpt", "interval", *options)))


JOB_METRICS_GOOD = {
    "interval": words(["--mtbf", "24"], ["--node-mtbf", "5000"], ["--ckpt-cost", "5", "--mtbf", "2"]),
    "metrics": st.just(["--metrics", "METRICS"]),
}
JOB_METRICS_BAD = {
    "interval": option("--mtbf", numbers()) | option("--node-mtbf", numbers())
    | option("--ckpt-cost", numbers()) | option("--step-time", numbers()) | option("--save-every", numbers())
    | words(["--save-every", "10"], []),
    "metrics": st.just(["--metrics", "METRICS"]),
}  # fmt: skip


@contract(examples=12)
@given(options=one_broken(JOB_METRICS_GOOD, JOB_METRICS_BAD), metrics=metrics_files())
def test_job_render_metrics(options, metrics):
    """The checkpoint interval computed from the trainer's metrics file (hostile JSONL)."""
    options = [metrics.arg if o == "METRICS" else o for o in options]
    args = ("job", "render", "--name", "r", "--nodes", "2", "--ntasks-per-node", "4", "--time", "01:00:00",
            "--config", "tiny", *options)  # fmt: skip
    fuzz(Command("job render --metrics", args, files=metrics.files))


STORAGE_ENV = st.fixed_dictionaries(
    {},
    optional={
        "CORDEE_DATA_DIR": paths() | text(), "CORDEE_CKPT_DIR": paths() | text(),
        "CORDEE_FREE_WARN_PCT": numbers(), "CORDEE_FREE_FAIL_PCT": numbers(),
        "TRITON_CACHE_DIR": paths() | text(), "HF_HOME": paths(), "CUDA_CACHE_DISABLE": values(),
        "TORCHINDUCTOR_CACHE_DIR": paths(), "HOME": paths() | text(), "USER": text(),
    },
)  # fmt: skip


@contract(examples=12)
@given(
    data=option("--data", paths() | text() | st.just("{CWD}")),
    checkpoints=option("--checkpoints", paths() | text() | st.just("{CWD}/ck")),
    env=STORAGE_ENV,
    as_json=flag("--json"),
)
def test_env_check_storage(data, checkpoints, env, as_json):
    args = ("env", "check", *as_json, *data, *checkpoints)  # --json first: a bare --data would take it
    fuzz(Command("env check --data", args, env=env, report_verb=True))


HOME_MOUNTS = st.sampled_from(
    ["${HOME}:${HOME}", "${HOME}:/home", "{HOME}:/h", "{HOME}/:/h:ro", "${HOME}/..:/x", "/home:/home",
     "${HOME}/sub:/s", "~:/x", "$HOME:/y", "${HOME}", "{HOME}/../home:/z"]
)  # fmt: skip


@contract(examples=10)
@given(
    mounts=st.lists(HOME_MOUNTS, min_size=1, max_size=3),
    home=st.sampled_from(["{HOME}", "/", "", "{HOME}/", "relative"]) | text(),
    as_json=flag("--json"),
)
def test_edf_check_home(mounts, home, as_json):
    """EDFs that mount all of $HOME (the warning of this session), with hostile HOME values."""
    # "${HOME}" as TOML's "$\u007bHOME}": the sandbox would expand the {HOME} in it to its own home
    values = ", ".join(toml_value(m).replace("${", "$\\u007b") for m in mounts)
    body = 'image = "ubuntu:22.04"\nmounts = [' + values + "]\n"
    command = Command("edf check $HOME", ("edf", "check", "{CWD}/e.toml", *as_json), env={"HOME": home},
                      files={"cwd/e.toml": body}, report_verb=True)  # fmt: skip
    fuzz(command)


# OUT of `data pack`: only places inside the sandbox (a --force over a device would replace it)
PACK_OUT = ["{CWD}/out.sqsh", "out.sqsh", "{CWD}/empty.toml", "{CWD}/fifo", "{CWD}/dir.toml",
            "{CWD}/zero.yaml", "{CWD}/missing/x.sqsh", "", "{CWD}/src/x.sqsh", "{CWD}/a\nb.sqsh",
            "{CWD}/" + "o" * 300]  # fmt: skip
PACK_GOOD = {
    "flags": st.lists(st.sampled_from(["--quiet", "--json", "--force"]), max_size=3, unique=True),
    "mount": words([], ["--mount-point", "/data"], ["--mount-point", "/a b/é"]),
}
PACK_BAD = {
    "mount": option("--mount-point", text() | paths()),
    "timeout": option("--timeout", timeouts()),
    "src": st.just(["SRC"]),
    "out": st.just(["OUT"]),
}


@contract(examples=12)
@given(options=one_broken(PACK_GOOD, PACK_BAD), src=pack_sources(), out=st.sampled_from(PACK_OUT))
def test_data_pack(options, src, out):
    """Tiny trees only. Also the consistency of pack and verify: an image pack wrote, verify
    finds whole (exit 0)."""
    src = src if "SRC" in options else Doc({"cwd/src/a.txt": "one\n", "cwd/src/b/c": "x"}, "src")
    out = out if "OUT" in options else "{CWD}/out.sqsh"
    options = [o for o in options if o not in ("SRC", "OUT")]
    command = Command(
        "data pack", ("data", "pack", src.arg, out, *options), files=src.files, may_write=(out,)
    )
    with sandbox() as box:
        outcome = run_in(box, command)
        JOURNAL.record(outcome)
        if outcome.returncode != 0 or "--help" in options:
            return
        verified = run_in(box, Command("data verify (packed)", ("data", "verify", out, "--quiet")))
        JOURNAL.record(verified)
        if verified.returncode != 0:
            said = (verified.stdout + verified.stderr)[-300:]
            detail = f"`data pack` wrote an image `data verify` rejects: {said}"
            JOURNAL.add(Violation("consistency", "data pack -> data verify: image rejected", detail), outcome)


@contract(examples=10)
@given(image=verify_images(), options=st.lists(st.sampled_from(["--quiet", "--json"]), max_size=2),
       timeout=option("--timeout", timeouts()))  # fmt: skip
def test_data_verify(image, options, timeout):
    args = ("data", "verify", image.arg, *options, *timeout)
    fuzz(Command("data verify", args, files=image.files, report_verb=True))


CHAT_GOOD = {
    "seq": words(["--seq-len", "32"], ["--seq-len", "64"]),
    "packing": words([], ["--packing", "pack"], ["--packing", "pad"]),
    "flags": st.lists(st.sampled_from(["--overwrite", "--quiet", "--json"]), max_size=2, unique=True),
}
CHAT_BAD = {
    "seq": option("--seq-len", chat_overrides()) | words([]),
    "packing": option("--packing", text()),
    "model": st.just(["MODEL"]),
    "inputs": st.just(["INPUTS"]),
    "mix": words(["--tokenizer", "{CWD}/model/tokenizer.json"], ["--format", "lines"], ["--key", "x"],
                 ["--shard-tokens", "4"], ["--eos-token", "</s>"]),
}  # fmt: skip


@contract(examples=12)
@given(options=one_broken(CHAT_GOOD, CHAT_BAD), model=chat_model_dirs(), inputs=chat_inputs())
def test_data_prepare_chat(options, model, inputs):
    """Also the consistency of prepare --chat and train: chat data prepare writes, `train --dry-run`
    reads with the model's vocabulary and the seq_len it was prepared for."""
    model = model if "MODEL" in options else Doc({f"cwd/model/{k}": v for k, v in chat_model_files().items()},
                                                 "model")  # fmt: skip
    inputs = inputs if "INPUTS" in options else Doc(
        {"cwd/chat.jsonl": "\n".join([json.dumps({"messages": GOOD_MESSAGES})] * 3) + "\n"}, "chat.jsonl"
    )  # fmt: skip
    options = [o for o in options if o not in ("MODEL", "INPUTS")]
    args = ("data", "prepare", "--chat", inputs.arg, "--model-dir", model.arg, "-o", "out", *options)
    with sandbox() as box:
        outcome = run_in(box, Command("data prepare --chat", args, files={**model.files, **inputs.files},
                                      may_write=("out",)))  # fmt: skip
        JOURNAL.record(outcome)
        index = box.cwd / "out" / "index.json"
        if outcome.returncode != 0 or not index.is_file():
            return
        written = json.loads(index.read_text())
        seq_len, vocab = written["seq_len"], written["vocab_size"]
        args = ("train", "--config", "tiny", "--dry-run", "data.path=out", f"seq_len={seq_len}",
                f"model.vocab_size={vocab}", f"model.max_seq_len={max(64, seq_len)}")  # fmt: skip
        read = run_in(box, Command("train --dry-run (chat)", args))
        JOURNAL.record(read)
        if read.returncode != 0:
            detail = f"`data prepare --chat` wrote data that `train --dry-run` rejects: {read.stderr[-300:]}"
            JOURNAL.add(Violation("consistency", "data prepare --chat -> train: rejected", detail), outcome)


IO_GOOD = {
    "path": words(["{CWD}/io"], ["io"]),
    "sizes": words(["--files", "10", "--size", "1M"], ["--files", "12", "--size", "1048576"]),
    "flags": st.lists(st.sampled_from(["--json", "--keep"]), max_size=2, unique=True),
}
BAD_FILES = ["0", "9", "1000001", "", "x", "1.5", "¹", "9" * 5000]
IO_BAD = {
    "path": paths().filter(lambda p: "outside" not in p).map(lambda p: [p]) | text().map(lambda t: [t]),
    "sizes": option("--files", st.sampled_from(BAD_FILES) | text()).map(lambda o: [*o, "--size", "1M"])
    | option("--size", st.sampled_from(["0", "1", "1K", "1023K", "5T", "9" * 30, "1.5M", "1 M", "-1M", ""])
             | text()).map(lambda o: [*o, "--files", "10"]),
    "timeout": option("--timeout", timeouts()),
    "env": st.just(["ENV"]),
}  # fmt: skip


@contract(examples=8)
@given(options=one_broken(IO_GOOD, IO_BAD), env=launch_env(most=2))
def test_io_bench(options, env):
    """--quick with 10 small files and 1 MiB: a run takes about a second. A launch environment of
    several ranks waits at the rank barrier for --timeout: 2 s then."""
    if "ENV" in options:
        options = [o for o in options if o != "ENV"] + ["--timeout", "2"]
    else:
        env = {}
    may_write = tuple(o for o in options if o in ("{CWD}/io", "io"))
    args = ("io", "bench", "--quick", *options)
    command = Command("io bench", args, env=env, files={"cwd/io": Directory()}, may_write=may_write,
                      deadline=2 * DEADLINE_S)  # fmt: skip
    fuzz(command)


SHARD_SIZES = st.sampled_from(["1B", "5GB", "0", "2PiB", "1 GiB"]) | numbers() | text()
EXPORT_OPTIONS = st.lists(
    words(["--quiet"], ["--json"], ["--dtype", "bf16"], ["--dtype", "fp32"])
    | option("--dtype", text()) | option("--max-shard-size", SHARD_SIZES),
    max_size=2,
).map(lambda parts: [word for part in parts for word in part])  # fmt: skip


@contract(examples=8)
@given(ckpt=checkpoints(), out=st.sampled_from(EXPORT_OUT), force=flag("--force"), options=EXPORT_OPTIONS)
def test_export(ckpt, out, force, options):
    """Hostile checkpoint directories: no run reaches a real export."""
    args = ("export", ckpt.arg, out, *force, *options)
    fuzz(Command("export", args, files=ckpt.files, may_write=(out,) if out else (), deadline=2 * DEADLINE_S))


@contract(examples=10)
@given(data=chat_data(), seq_len=st.sampled_from(["32", "32", "16", "64"]),
       overrides=words([], ["micro_batch=2", "global_batch=4"], ["model.vocab_size=4"]))  # fmt: skip
def test_train_chat_data(data, seq_len, overrides):
    """Chat data (cordee.chat/1) with index.json or the shard broken, read by the dry run."""
    args = ("train", "--dry-run", "--config", "tiny", f"data.path={data.arg}", f"seq_len={seq_len}",
            "model.vocab_size=64", *overrides)  # fmt: skip
    fuzz(Command("train --dry-run (chat data)", args, files=data.files))


@contract(examples=12)
@given(model=hf_dirs(), overrides=words([], ["seq_len=16"], ["model.n_layers=1"], ["model.arch=apertus"]),
       config=st.sampled_from(["tiny", "finetune-llama", "finetune-apertus"]))  # fmt: skip
def test_train_from_hf(model, overrides, config):
    """model.from_hf=DIR with a hostile config.json; the dry run reads no weights."""
    args = ("train", "--dry-run", "--config", config, f"model.from_hf={model.arg}", *overrides)
    fuzz(Command("train from_hf", args, files=model.files))


VOCABULARY = [
    "env", "show", "check", "hostlist", "expand", "compress", "image", "list", "validate", "render", "edf",
    "net", "launch", "--dry-run", "--json", "--profile", "--out", "--all", "--sqsh", "--timeout",
    "--provider", "--nproc-per-node", "--bind", "--grace", "-v", "-q", "--help", "-h", "--version", "--",
    "true", "cpu-ci", "--json=1", "--out=", "--bogus", "-", "",
    "preflight", "baseline", "ci-template", "--level", "quick", "--checks", "--system", "--thresholds",
    "bench", "collectives", "gemm", "hbm", "--device", "cpu", "--ops", "train", "--config", "tiny", "data",
    "prepare", "-o", "--format", "--tokenizer", "job", "--name", "--nodes", "--time", "--set", "--command",
    "io", "--quick", "--files", "--size", "--keep", "ckpt", "interval", "--cost", "--mtbf", "--node-mtbf",
    "--step-time", "export", "--dtype", "--max-shard-size", "pack", "verify", "--mount-point", "--chat",
    "--model-dir", "--seq-len", "--packing", "--data", "--checkpoints", "--metrics", "--save-every",
    "model.from_hf=hf", "--quiet",
]  # fmt: skip
# What must follow these words wherever they appear, so that no run starts real work: the quick
# preflight on one rank, benchmarks of one byte or one 1x1 matrix, once; the I/O benchmark of ten
# files and 1 MiB in the working directory; a pack of a tiny tree (--force is not a word here: OUT
# could be /dev/null).
NO_WORK = {
    "io": ["bench", "{CWD}", "--quick", "--files", "10", "--size", "1M", "--timeout", "5"],
    "pack": ["{CWD}/src", "{CWD}/out.sqsh"],
    "launch": ["--dry-run"],
    "train": ["--dry-run"],
    "preflight": ["--level", "quick", "--nproc", "1", "-q"],
    "collectives": ["--sizes", "1", "--iters", "1", "--warmup", "0", "--ops", "all_reduce"],
    "gemm": ["--sizes", "1", "--iters", "1", "--warmup", "0"],
    "hbm": ["--sizes", "1", "--iters", "1", "--warmup", "0"],
}

MORE_WORK = ("--nproc", "--sizes", "--iters", "--level", "--files", "--size", "--timeout")

# Encodings and terminal widths a shell may carry: output must not depend on them to be sane.
TERMINAL = st.fixed_dictionaries(
    {},
    optional={
        "LC_ALL": st.sampled_from(["C", "POSIX", "en_US.ISO-8859-1", "xx_XX.bogus"]),
        "PYTHONIOENCODING": st.sampled_from(["ascii", "latin-1"]),
        "COLUMNS": numbers(),
    },
)


@contract(examples=30)
@given(argv=st.lists(st.sampled_from(VOCABULARY) | st.sampled_from(NASTY_TEXT) | values(), max_size=6),
       env=TERMINAL)  # fmt: skip
def test_any_arguments(argv, env):
    """Verbs and options in any order, repeated, missing their values or given odd ones."""
    # --out through the sentinel link asks to write there; build and run would start podman;
    # MORE_WORK (given later) could ask for real work again
    argv = [a for a in argv if "outside" not in a and a not in ("build", "run")]
    for word, safe in NO_WORK.items():
        if word in argv:
            at = argv.index(word) + 1
            argv[at:] = [a for a in argv[at:] if a not in MORE_WORK]
            argv[at:at] = safe
    command = Command("any arguments", tuple(argv), env=env, files={"cwd/src/a.txt": "x"},
                      may_write=("{ROOT}/build", "{CWD}"), report_verb=True)  # fmt: skip
    fuzz(command)
