"""Bad input as issue 9 found it, one deterministic case each: the exact input, the real `cordee`
command in a sandbox, the whole CLI contract checked (tests/fuzz/contract.py: exit code 0-3, no
traceback, no hang, one line for exit 2, no control character echoed, nothing written outside,
no process or temporary file left behind).

Classes: numbers (thousands of digits, Unicode digits, Slurm repeat counts), structure (deep
nesting, alias bombs, base_environment fan-out), files (unbounded reads, FIFOs, names longer than
NAME_MAX, --out at an existing file or an unwritable place), values (huge timeouts, control
characters), safety (a stale build.json in --out DIR), consistency (render vs edf check).
"""

from __future__ import annotations

import pytest
import yaml
from fuzz.documents import alias_bomb, deep_toml, deep_yaml, toml_text
from fuzz.journal import assert_contract
from fuzz.runner import Command, run, run_in, sandbox
from fuzz.sandbox import REPO, Fifo, Symlink

DIGITS_5000 = "9" * 5000
SLURM_STEP = {  # one task on one node, consistent: each case breaks one thing
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NTASKS": "1",
    "SLURM_NNODES": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_ID": "42",
    "SLURM_JOB_NODELIST": "nid001",
    "SLURM_TASKS_PER_NODE": "1",
}


def spec(**fields) -> str:
    """cpu-ci's spec with `fields` replaced (edf=... merges into its edf table)."""
    data = yaml.safe_load((REPO / "images" / "cpu-ci.yaml").read_text())
    for key, value in fields.items():
        data[key] = {**data.get(key, {}), **value} if key == "edf" else value
    return yaml.safe_dump(data, allow_unicode=True)


def check(command: Command) -> None:
    assert_contract(run(command))


NUMBERS = {
    "5000 digits in a profile variable": Command(
        "env check", ("env", "check"), env={"FI_CXI_DEFAULT_TX_SIZE": DIGITS_5000}, report_verb=True
    ),
    "5000 digits in SLURM_PROCID": Command(
        "env show", ("env", "show"), env={**SLURM_STEP, "SLURM_PROCID": DIGITS_5000}
    ),
    "5000 digits in a hostlist range": Command(
        "hostlist expand", ("hostlist", "expand", f"n[1-{DIGITS_5000}]")
    ),
    "5000 digits for --nproc-per-node": Command(
        "launch --dry-run", ("launch", "--dry-run", "--nproc-per-node", DIGITS_5000, "--", "true")
    ),
    "5000 digits in a spec": Command(
        "image validate",
        ("image", "validate", "./n.yaml"),
        files={"cwd/n.yaml": spec(description="HUGE").replace("HUGE", DIGITS_5000)},
    ),
    "5000 digits in an EDF": Command(
        "edf check",
        ("edf", "check", "./n.toml"),
        files={"cwd/n.toml": f"image = {DIGITS_5000}\n"},
        report_verb=True,
    ),
    "superscript in CUDA_VISIBLE_DEVICES": Command(
        "env show", ("env", "show"), env={"CUDA_VISIBLE_DEVICES": "¹"}
    ),
    "superscript in CUDA_VISIBLE_DEVICES (launch)": Command(
        "launch --dry-run", ("launch", "--dry-run", "--", "true"), env={"CUDA_VISIBLE_DEVICES": "¹"}
    ),
    "superscript as an ssh port annotation": Command(
        "edf check",
        ("edf", "check", "./p.toml"),
        files={
            "cwd/p.toml": toml_text({"image": "ubuntu:22.04", "annotations": {"com.hooks.ssh.port": "²"}})
        },
        report_verb=True,
    ),
    "superscript in SLURM_NTASKS": Command(
        "env show", ("env", "show"), env={**SLURM_STEP, "SLURM_NTASKS": "¹"}
    ),
    "repeat count 1(x1000000000)": Command(
        "env show", ("env", "show"), env={**SLURM_STEP, "SLURM_TASKS_PER_NODE": "1(x1000000000)"}
    ),
}


@pytest.mark.parametrize("case", sorted(NUMBERS))
def test_numbers(case):
    check(NUMBERS[case])


FANOUT = {  # each file names the next one three times, eleven levels deep
    **{f"edf/f{i}.toml": toml_text({"base_environment": [f"f{i + 1}"] * 3}) for i in range(11)},
    "edf/f11.toml": toml_text({"image": "ubuntu:22.04"}),
}
STRUCTURE = {
    "TOML nested 100000 deep": Command(
        "edf check",
        ("edf", "check", "./deep.toml"),
        files={"cwd/deep.toml": deep_toml(100_000)},
        report_verb=True,
    ),
    "YAML nested 100000 deep": Command(
        "image validate", ("image", "validate", "./deep.yaml"), files={"cwd/deep.yaml": deep_yaml(100_000)}
    ),
    "YAML alias bomb of 1 KB": Command(
        "image validate", ("image", "validate", "./bomb.yaml"), files={"cwd/bomb.yaml": alias_bomb()}
    ),
    "base_environment fan-out, 11 levels": Command(
        "edf check", ("edf", "check", "f0"), files=FANOUT, report_verb=True
    ),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE))
def test_structure(case):
    check(STRUCTURE[case])


def test_alias_bomb_is_about_a_kilobyte():
    assert 500 < len(alias_bomb()) < 1500


LONG_NAME = "n" * 300
FILES = {
    "spec is /dev/zero": Command("image validate", ("image", "validate", "/dev/zero")),
    "spec is a symlink to /dev/zero": Command(
        "image validate", ("image", "validate", "./z.yaml"), files={"cwd/z.yaml": Symlink("/dev/zero")}
    ),
    "NCCL_CONF_FILE is /dev/zero": Command(
        "net show", ("net", "show", "--timeout", "2"), env={"NCCL_CONF_FILE": "/dev/zero"}, report_verb=True
    ),
    "spec is a FIFO": Command(
        "image validate", ("image", "validate", "./f.yaml"), files={"cwd/f.yaml": Fifo()}
    ),
    "EDF image is a FIFO": Command(
        "edf check",
        ("edf", "check", "./e.toml"),
        files={"cwd/e.toml": toml_text({"image": "{CWD}/img.sqsh"}), "cwd/img.sqsh": Fifo()},
        report_verb=True,
    ),
    "EDF mount is a FIFO": Command(
        "edf check",
        ("edf", "check", "./e.toml"),
        files={
            "cwd/e.toml": toml_text({"image": "ubuntu:22.04", "mounts": ["{CWD}/m.sqsh:/data:sqsh"]}),
            "cwd/m.sqsh": Fifo(),
        },  # fmt: skip
        report_verb=True,
    ),
    "NCCL_CONF_FILE is a FIFO": Command(
        "net show", ("net", "show", "--timeout", "2"), env={"NCCL_CONF_FILE": "{CWD}/fifo"}, report_verb=True
    ),
    "EDF name longer than NAME_MAX": Command(
        "edf check", ("edf", "check", f"./{LONG_NAME}.toml"), report_verb=True
    ),
    "spec name longer than NAME_MAX": Command("image validate", ("image", "validate", f"./{LONG_NAME}.yaml")),
    "CORDEE_ROOT longer than NAME_MAX": Command(
        "image list", ("image", "list"), env={"CORDEE_ROOT": f"{{CWD}}/{LONG_NAME}"}
    ),
    "image render --out longer than NAME_MAX": Command(
        "image render", ("image", "render", "cpu-ci", "--out", LONG_NAME), may_write=(LONG_NAME,)
    ),
    "edf render --out longer than NAME_MAX": Command(
        "edf render",
        ("edf", "render", "cpu-ci", "--out", f"{LONG_NAME}.toml"),
        may_write=(f"{LONG_NAME}.toml",),
    ),
    "image render --out an existing file": Command(
        "image render", ("image", "render", "cpu-ci", "--out", "empty.yaml"), may_write=("empty.yaml",)
    ),
    "image render --out an unwritable place": Command(
        "image render",
        ("image", "render", "cpu-ci", "--out", "/proc/cordee-out"),
        may_write=("/proc/cordee-out",),
    ),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_files(case):
    check(FILES[case])


VALUES = {
    "net show --timeout 1e10": Command("net show", ("net", "show", "--timeout", "1e10"), report_verb=True),
    "newline in --profile": Command("env check", ("env", "check", "--profile", "no\nsuch"), report_verb=True),
    "escape sequence in a hostlist": Command("hostlist expand", ("hostlist", "expand", "n\x1b[2J1")),
    "newline in an EDF annotation value": Command(
        "edf check",
        ("edf", "check", "./a.toml"),
        files={
            "cwd/a.toml": toml_text(
                {
                    "image": "ubuntu:22.04",
                    "annotations": {"com.hooks.aws_ofi_nccl.variant": "cuda12\nevil: x"},
                }
            )
        },  # fmt: skip
        report_verb=True,
    ),
    "newline in an EDF mount": Command(
        "edf check",
        ("edf", "check", "./m.toml"),
        files={"cwd/m.toml": toml_text({"image": "ubuntu:22.04", "mounts": ["/a\nb:/data:bogus"]})},
        report_verb=True,
    ),
}


@pytest.mark.parametrize("case", sorted(VALUES))
def test_values(case):
    check(VALUES[case])


def test_render_leaves_files_outside_its_out_dir_alone():
    """A stale build.json in --out DIR lists a file reached through a symlink out of DIR; the
    render must not delete it (the sentinel directory outside every sandbox)."""
    files = {
        "cwd/out/build.json": '{"files": ["Containerfile", "link/victim.txt", "victim-link"]}',
        "cwd/out/link": Symlink("{SENTINEL}"),
        "cwd/out/victim-link": Symlink("{SENTINEL}/victim.txt"),
    }
    check(
        Command(
            "image render", ("image", "render", "cpu-ci", "--out", "out"), files=files, may_write=("out",)
        )
    )


@pytest.mark.parametrize("where", ["edf.env", "edf.mounts"])
@pytest.mark.parametrize("value", ["${", "${HOME", "${}", "${1X}"])
def test_what_render_writes_edf_check_accepts(where, value):
    """A `$` that is no valid ${VAR}: refused by `image render`, or written so that `edf check` passes."""
    edf = {"env": {"CORDEE_X": value}} if where == "edf.env" else {"mounts": [f"/tmp{value}:/data"]}
    render = Command("image render", ("image", "render", "./probe.yaml", "--out", "out"),
                     files={"cwd/probe.yaml": spec(edf=edf)}, may_write=("out",))  # fmt: skip
    with sandbox() as box:
        rendered = assert_contract(run_in(box, render))
        if rendered.returncode == 0:
            edf_check = Command("edf check", ("edf", "check", "out/probe.toml"), report_verb=True)
            checked = assert_contract(run_in(box, edf_check))
            assert checked.returncode != 2, f"render wrote an EDF that edf check rejects:\n{checked.stdout}"
