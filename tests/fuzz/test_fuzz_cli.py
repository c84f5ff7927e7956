"""Every verb of the real `cordee` command under hostile arguments, environments and files.

Each test runs its verb `examples` times (twelve times as many with CORDEE_FUZZ=long, `make fuzz`;
fuzz/driver.py), checks the contract on every run (fuzz/contract.py) and fails at its end with
every violation it saw, grouped by root cause.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzz.contract import Violation
from fuzz.documents import edf_args, nccl_conf, spec_args, specs
from fuzz.driver import contract, flag, fuzz, option
from fuzz.environments import PROFILES, launch_env, net_env, profile_env
from fuzz.hostile import NASTY_TEXT, hostlists, numbers, paths, text, timeouts, values
from fuzz.journal import JOURNAL
from fuzz.runner import DEADLINE_S, Command, run_in, sandbox
from fuzz.sandbox import Symlink


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


VOCABULARY = [
    "env", "show", "check", "hostlist", "expand", "compress", "image", "list", "validate", "render", "edf",
    "net", "launch", "--dry-run", "--json", "--profile", "--out", "--all", "--sqsh", "--timeout",
    "--provider", "--nproc-per-node", "--bind", "--grace", "-v", "-q", "--help", "-h", "--version", "--",
    "true", "cpu-ci", "--json=1", "--out=", "--bogus", "-", "",
]  # fmt: skip


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
    # --out through the sentinel link asks to write there; build and run would start podman
    argv = [a for a in argv if "outside" not in a and a not in ("build", "run")]
    if "launch" in argv:  # never start a command
        argv.insert(argv.index("launch") + 1, "--dry-run")
    fuzz(
        Command("any arguments", tuple(argv), env=env, may_write=("{ROOT}/build", "{CWD}"), report_verb=True)
    )
