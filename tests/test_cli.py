"""The `cordee` command line itself: help of every verb, one-line usage errors (exit 2), --version,
`-- CMD` pass-through, lazy loading of the verb modules, shell completion, Ctrl-C and a closed
pipe. In-process runs go through click's CliRunner; what needs a fresh interpreter or a signal
runs the installed `cordee` as a process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cordee import __version__
from cordee.cli import VERBS, main

CORDEE = str(Path(sys.executable).with_name("cordee"))
HEAVY = ("torch", "jinja2", "yaml")


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def entry_point(argv):
    """The console entry point (cordee.cli:main, with its one-line error handling) inside CliRunner."""
    main(list(argv))


def cordee(*args: str, env: dict | None = None):
    try:  # click 8.1 mixes stderr into stdout unless told; 8.2 keeps them apart and dropped the flag
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(entry_point, list(args), env=env, catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())  # click wraps help to the terminal width


# command path -> what its help must show: the options, metavars and help strings of the contract
HELP = {
    (): ["--version", "-h, --help", *VERBS],
    ("env",): ["show", "check"],
    ("env", "show"): ["--json", "Print JSON (schema cordee.env/1)."],
    ("env", "check"): ["--profile NAME", "--json", "(schema cordee.envcheck/1)", "suggested from node count"],
    ("hostlist",): ["expand", "compress", "scontrol show hostnames"],
    ("hostlist", "expand"): ["EXPR", "--json", "(schema cordee.hostlist/1)"],
    ("hostlist", "compress"): ["HOST...", "--json", "'-' reads them from stdin"],
    ("launch",): [
        "cordee launch [OPTIONS] -- CMD ...",
        "--profile P",
        "--nproc-per-node N",
        "--bind [auto|none]",
        "--grace S",
        "-v, --verbose",
        "-q, --quiet",
        "--dry-run",
        "--preflight [none|quick]",
        "Start N local ranks per launched task and supervise them.",
    ],
    ("image",): ["list", "validate", "render", "build"],
    ("image", "list"): ["--json", "(schema cordee.imagelist/1)"],
    ("image", "validate"): ["[NAME]...", "--all", "validate every spec in images/"],
    ("image", "render"): ["[NAME]...", "--all", "--out DIR"],
    ("image", "build"): ["NAME", "--force", "--mirror URL", "--json", "(schema cordee.imagebuild/1)"],
    ("edf",): ["check", "render", "run", "$EDF_PATH"],
    ("edf", "check"): ["FILE_OR_NAME", "--json", "(schema cordee.edfcheck/1)"],
    ("edf", "render"): ["NAME", "--sqsh PATH", "--out FILE"],
    ("edf", "run"): ["cordee edf run [OPTIONS] NAME_OR_FILE -- CMD ...", "--timeout S", "--no-host-env"],
    ("net",): ["show"],
    ("net", "show"): ["--json", "--provider PROVIDER", "--timeout S", "CORDEE_NCCL_LIBRARY"],
    ("preflight",): [
        "--level [quick|standard|long]", "--system NAME", "--thresholds FILE", "--json FILE", "--junit FILE",
        "--plot FILE", "--exclude-file FILE", "--nproc N", "--timeout S", "--stall-timeout S",
        "--checks PATTERN", "baseline", "ci-template", "exit 3",
    ],
    ("preflight", "baseline"): ["RESULTS...", "--tolerance F", "--name N", "--out FILE"],
    ("preflight", "ci-template"): ["--nodes N", "--environment EDF", "--level", "--system S", "--out FILE"],
    ("bench",): ["collectives", "gemm", "hbm"],
    ("bench", "collectives"): ["--sizes SIZES", "--ops", "--no-check", "--dtype", "--json", "--timeout S"],
    ("bench", "gemm"): ["--sizes SIZES", "--dtype", "--json", "--device [auto|cpu|cuda]"],
    ("bench", "hbm"): ["--sizes SIZES", "--json", "--device [auto|cpu|cuda]"],
    ("train",): ["[KEY=VALUE]...", "--config FILE|NAME", "--dry-run", "--json", "model.n_layers", "75"],
    ("data",): ["prepare", "pack", "verify"],
    ("data", "pack"): ["SRC OUT.sqsh", "--force", "--mount-point", "--timeout SECONDS", "--json",
                       "(schema cordee.data.pack/1)"],
    ("data", "verify"): ["IMAGE", "--timeout SECONDS", "--json", "(schema cordee.data.verify/1)"],
    ("io",): ["bench"],
    ("io", "bench"): ["PATH", "--quick", "--size BYTES", "--files", "--timeout S", "--keep", "--json",
                      "(schema cordee.io/1)", "posix_fadvise"],
    ("data", "prepare"): ["INPUT...", "-o, --output DIR", "--tokenizer FILE", "--shard-tokens", "--json",
                          "--chat", "--model-dir DIR", "--seq-len", "--packing [pack|pad]"],
    ("job",): ["render"],
    ("job", "render"): [
        "--name NAME", "--nodes N", "--time HH:MM:SS", "--environment EDF", "--config CFG", "--set KEY=VALUE",
        "--signal SIG", "--signal-before S", "--chain [singleton|requeue]", "--max-failures N", "--out FILE",
        "--save-every N", "--metrics FILE", "--mtbf HOURS",
    ],
    ("export",): ["CHECKPOINT OUT_DIR", "--dtype [auto|bf16|fp32]", "--max-shard-size SIZE", "--force",
                  "(schema cordee.export/1)"],
    ("ckpt",): ["interval"],
    ("ckpt", "interval"): ["--cost SECONDS", "--mtbf HOURS", "--node-mtbf HOURS", "--step-time SECONDS",
                           "Young", "Daly", "(schema cordee.ckpt.interval/1)"],
}  # fmt: skip


@pytest.mark.parametrize("path", list(HELP), ids=lambda p: " ".join(p) or "cordee")
def test_help_of_every_verb(path):
    result = cordee(*path, "--help")
    assert result.exit_code == 0 and result.stderr == ""
    text = flat(result.stdout)
    assert text.startswith(f"Usage: {' '.join(('cordee', *path))} ")
    missing = [want for want in HELP[path] if want not in text]
    assert missing == [], result.stdout
    assert cordee(*path, "-h").stdout == result.stdout


def test_every_verb_and_sub_verb_has_its_help_checked():
    """HELP above covers the whole tree: a new verb or sub-verb must be added there."""
    from cordee.cli import root

    def walk(command: click.Command, path: tuple, ctx: click.Context):
        yield path
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                yield from walk(sub, (*path, name), click.Context(sub, parent=ctx, info_name=name))

    assert set(walk(root, (), click.Context(root, info_name="cordee"))) == set(HELP)


def test_root_help_lists_each_verb_with_its_line():
    text = flat(cordee("--help").stdout)
    for name, verb in VERBS.items():
        assert f"{name} {verb.help}" in text


def test_version():
    result = cordee("--version")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"cordee {__version__}\n", "")


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "cordee: missing command"),
        (["nonsense-verb"], "cordee: no such command 'nonsense-verb'"),
        (["env"], "cordee env: missing command"),
        (["env", "show", "--bogus"], "--bogus"),
        (["launch", "--bogus", "--", "true"], "--bogus"),
        (["edf", "check"], "missing argument 'FILE_OR_NAME'"),
        (["hostlist", "compress"], "missing argument 'HOST...'"),
        (["launch", "--nproc-per-node", "two", "--", "true"], "'two' is not a number (int)"),
        (["launch", "--nproc-per-node", "0", "--", "true"], "0 is not in 1..1024"),
        (["launch", "--grace", "nan", "--", "true"], "--grace"),
        (["launch", "--bind", "sideways", "--", "true"], "--bind"),
        (["net", "show", "--timeout", "inf"], "inf: must be a positive number of seconds"),
        (["edf", "run", "--timeout", "0", "x", "--", "true"], "--timeout"),
        (["edf", "run", "x", "--"], "missing CMD"),
        (["image", "build"], "missing argument 'NAME'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, fragment):
    result = cordee(*args)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0] and lines[0].startswith("cordee") and lines[0].endswith(" --help)")


def test_domain_errors_are_one_line_with_their_exit_code():
    result = cordee("hostlist", "expand", "n[3-1]")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == "cordee: error: bad hostlist 'n[3-1]': range 3-1 goes backwards\n"


@pytest.mark.parametrize(
    "args, command",
    [
        (["--", sys.executable, "-c", "pass", "--help"], [sys.executable, "-c", "pass", "--help"]),
        ([sys.executable, "-v", "-q"], [sys.executable, "-v", "-q"]),  # CMD starts at its first word
        (["-q", "--", sys.executable, "--", "x"], [sys.executable, "--", "x"]),
    ],
)
def test_launch_passes_cmd_through_untouched(args, command):
    env = {k: None for k in os.environ if k.startswith(("SLURM_", "MASTER_", "CORDEE_"))}
    result = cordee("launch", "--dry-run", "--profile", "none", "--bind", "none", *args, env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["command"] == command


def loaded_modules(*argv: str) -> dict[str, list[str]]:
    """Run the CLI in a fresh interpreter; which cordee.cli modules and heavy libraries it loaded."""
    code = (
        "import contextlib, io, json, sys\n"
        "from cordee.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({list(argv)!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "mods = sorted(sys.modules)\n"
        "print(json.dumps({'cli': [m for m in mods if m.startswith('cordee.cli.')],\n"
        f"                  'heavy': [m for m in mods if m.split('.')[0] in {HEAVY!r}]}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "argv, verb",
    [
        (["--help"], None),
        (["env", "show", "--json"], "env"),
        (["env", "check", "--json"], "env"),
        (["launch", "--dry-run", "--", "true"], "launch"),
        (["hostlist", "expand", "n[1-4]"], "hostlist"),
        (["edf", "--help"], "edf"),
        (["nonsense-verb"], None),
    ],
)
def test_only_the_running_verb_is_imported(argv, verb):
    loaded = loaded_modules(*argv)
    verbs = {VERBS[name].module for name in VERBS}
    assert verbs & set(loaded["cli"]) == ({VERBS[verb].module} if verb else set())
    assert loaded["heavy"] == []


def test_completion_script_and_candidates():
    script = subprocess.run(
        [CORDEE], env={**os.environ, "_CORDEE_COMPLETE": "bash_source"}, capture_output=True, text=True
    )
    assert script.returncode == 0 and "_CORDEE_COMPLETE=bash_complete" in script.stdout
    # the script is valid bash and registers the function for `cordee`
    check = subprocess.run(
        ["bash", "-c", 'eval "$(_CORDEE_COMPLETE=bash_source "$0")" && complete -p cordee', CORDEE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "cordee" in check.stdout, check.stderr

    def candidates(words: str) -> list[str]:
        env = {"_CORDEE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(words.count(" "))}
        return cordee(env=env).stdout.split()

    assert candidates("cordee en") == ["plain,env"]
    assert candidates("cordee hostlist e") == ["plain,expand"]
    assert "plain,--nproc-per-node" in candidates("cordee launch --np")


def test_python_dash_m_cordee():
    out = subprocess.run(
        [sys.executable, "-m", "cordee", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout) == (0, f"cordee {__version__}\n")


def test_closed_stdout_is_exit_0_without_a_message():
    proc = subprocess.Popen(
        [CORDEE, "hostlist", "expand", "nid[000001-050000]"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"nid000001\n"
    proc.stdout.close()  # more than a pipe buffer is still to come: the next write gets EPIPE
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""


def test_ctrl_c_is_exit_130_with_one_line():
    proc = subprocess.Popen(
        [CORDEE, "hostlist", "compress", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a run started in the background of a shell inherits SIGINT ignored, and Python then
        # installs no handler for it: give the child the default a terminal's Ctrl-C meets
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wchan = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + 30
    while "pipe_read" not in wchan.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)  # until it blocks reading stdin: Python's SIGINT handler is in place
    assert "pipe_read" in wchan.read_text(), "cordee never read stdin"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)  # before communicate() closes stdin: EOF must not win the race on a busy machine
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, b"cordee: interrupted\n")
