"""Bad input as issue 9 found it, one deterministic case each: the exact input, the real `cordee`
command in a sandbox, the whole CLI contract checked (tests/fuzz/contract.py: exit code 0-3, no
traceback, no hang, one line for exit 2, no control character echoed, nothing written outside,
no process or temporary file left behind).

Classes: numbers (thousands of digits, Unicode digits, Slurm repeat counts), structure (deep
nesting, alias bombs, base_environment fan-out), files (unbounded reads, FIFOs, names longer than
NAME_MAX, --out at an existing file or an unwritable place), values (huge timeouts, control
characters), safety (a stale build.json in --out DIR), consistency (render vs edf check); and for
preflight, train and data: deep JSON, huge numbers, tokenizer files the library fails or panics
on, shard counts, empty or sparse vocabularies, a Slurm time limit of zero, data shorter than one
sample, misleading config-key messages, and a report whose summary disagreed with its exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import yaml
from fuzz.documents import SHARD_HEADER, TOKENIZER, alias_bomb, deep_toml, deep_yaml, toml_text
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


# --- preflight, bench, train, data, job (found by tests/fuzz: test_preflight* ... test_job_render) ---

DEEP_JSON = "[" * 100_000 + "]" * 100_000


def shard(tokens: list[int], **fields) -> bytes:
    """A uint16 token shard; `fields` replace header fields (magic, version, code, tokens, ...)."""
    header = {"magic": b"CORDTOK\0", "version": 1, "code": 1, "tokens": len(tokens), "documents": 0,
              "max_token": max(tokens, default=0), **fields}  # fmt: skip
    return SHARD_HEADER.pack(*header.values()) + b"".join(t.to_bytes(2, "little") for t in tokens)


def tokenizer(**changes) -> str:
    """The fuzz suite's small WordLevel tokenizer.json with `changes` (model.* keys as model_*)."""
    model = {**TOKENIZER["model"], **{k[6:]: v for k, v in changes.items() if k.startswith("model_")}}
    return json.dumps({**TOKENIZER, **{k: v for k, v in changes.items() if not k.startswith("model_")},
                       "model": model})  # fmt: skip


def dry_run(path: str, **files) -> Command:
    return Command(
        "train --dry-run", ("train", "--config", "tiny", "--dry-run", f"data.path={path}"), files=files
    )


def prepare(*args: str, files=None, out: str = "out") -> Command:
    return Command("data prepare", ("data", "prepare", *args, "-o", out), files=files or {}, may_write=(out,))


def results(*items: dict, system: str = "cpu-ci") -> str:
    return json.dumps({"schema": "cordee.preflight/1", "system": system, "results": list(items)})


GEMM = {
    "check": "compute.gemm",
    "status": "ok",
    "node": "n0",
    "rank": 0,
    "data": {"metric": "cpu_gemm_gflops"},
}
QUICK = ("--level", "quick", "--nproc", "1", "--device", "cpu", "--checks", "env.profile", "-q")

PLATFORM = {
    "index.json nested 100000 deep": dry_run(
        "d", **{"cwd/d/a.tok": shard(list(range(10))), "cwd/d/index.json": DEEP_JSON}
    ),
    "JSONL record nested 100000 deep": prepare("in.jsonl", files={"cwd/in.jsonl": DEEP_JSON + "\n"}),
    "--overwrite an output whose index.json is nested 100000 deep": Command(
        "data prepare",
        ("data", "prepare", "in.txt", "-o", "out", "--overwrite"),
        files={"cwd/in.txt": "x", "cwd/out/index.json": DEEP_JSON},
        may_write=("out",),
    ),
    "-o 2100 directories deep": prepare("in.txt", files={"cwd/in.txt": "x"}, out="d/" * 2100 + "x"),
    "--shard-tokens 1 for a MiB of text": Command(  # a million shard files: a hang
        "data prepare",
        ("data", "prepare", "big.yaml", "-o", "out", "--shard-tokens", "1"),
        may_write=("out",),
    ),
    "tokenizer whose unk_token is not in its vocabulary": prepare(
        "in.txt",
        "--tokenizer",
        "t.json",
        files={"cwd/in.txt": "a c", "cwd/t.json": tokenizer(model_unk_token="zz")},
    ),
    "tokenizer the library panics on": prepare(
        "in.txt",
        "--tokenizer",
        "t.json",
        files={
            "cwd/in.txt": "a",
            "cwd/t.json": tokenizer(normalizer={"type": "Precompiled", "precompiled_charsmap": "A"}),
        },
    ),
    "baseline: a metric that is a list": Command(
        "preflight baseline",
        ("preflight", "baseline", "r.json"),
        files={"cwd/r.json": results({**GEMM, "value": 1.0, "data": {"metric": ["cpu_gemm_gflops"]}})},
    ),
    "baseline: 5000 digits in a results file": Command(
        "preflight baseline",
        ("preflight", "baseline", "r.json"),
        files={"cwd/r.json": results(GEMM).replace('"rank": 0', f'"rank": {DIGITS_5000}')},
    ),
    "baseline: a value beyond float's range": Command(
        "preflight baseline",
        ("preflight", "baseline", "r.json"),
        files={"cwd/r.json": results(GEMM).replace('"rank": 0', '"rank": 0, "value": 1' + "0" * 400)},
    ),
    "system profile variant [gpus.<5000 digits>]": Command(
        "preflight",
        ("preflight", "--thresholds", "p.toml", *QUICK),
        files={
            "cwd/p.toml": (REPO / "platform/cordee/preflight/systems/h200-sxm.toml").read_text()
            + f"\n[gpus.{DIGITS_5000}]\n"
        },  # fmt: skip
        report_verb=True,
    ),
}


@pytest.mark.parametrize("case", sorted(PLATFORM))
def test_platform(case):
    outcome = assert_contract(run(PLATFORM[case]))
    assert outcome.returncode == 2, outcome.stderr


def test_dry_run_refuses_a_bool_as_the_data_vocabulary():
    index = {"schema": "cordee.data/1", "vocab_size": True, "shards": [{"name": "a.tok", "tokens": 3}]}
    outcome = check_run(
        dry_run("d", **{"cwd/d/a.tok": shard([1, 2, 3]), "cwd/d/index.json": json.dumps(index)})
    )
    assert outcome.returncode == 2 and "vocab_size" in outcome.stderr


def test_prepare_blames_the_input_it_cannot_read():
    """mem.toml (/proc/self/mem) opens but fails to read (EIO): the line named the output."""
    outcome = check_run(prepare("mem.toml"))
    assert outcome.returncode == 2 and "mem.toml" in outcome.stderr and "output '" not in outcome.stderr


def test_prepare_refuses_inputs_without_documents():
    """Blank JSONL lines are skipped: an empty data set, which `cordee train` would refuse."""
    outcome = check_run(prepare("in.jsonl", files={"cwd/in.jsonl": "\n \n"}))
    assert outcome.returncode == 2 and "no document" in outcome.stderr


def test_sparse_tokenizer_ids_reach_train_intact():
    """</s> is id 70000 in a 4-word vocabulary: the shards were uint16 (the word count), so the id
    wrapped to 4464 and train called the shard damaged."""
    files = {
        "cwd/in.txt": "a b a\n",
        "cwd/t.json": tokenizer(model_vocab={"[UNK]": 0, "a": 1, "</s>": 70000}),
    }
    with sandbox() as box:
        prepared = assert_contract(
            run_in(box, prepare("in.txt", "--tokenizer", "t.json", "--json", files=files))
        )
        assert prepared.returncode == 0 and json.loads(prepared.stdout)["vocab_size"] == 70001
        train = dry_run("out")._replace(args=(*dry_run("out").args, "model.vocab_size=70001", "seq_len=2"))
        assert assert_contract(run_in(box, train)).returncode == 0


def test_baseline_refuses_negative_measurements():
    """A negative GFLOP/s became a negative limit: a profile that --thresholds then refused."""
    outcome = check_run(
        Command(
            "preflight baseline",
            ("preflight", "baseline", "r.json"),
            files={"cwd/r.json": results({**GEMM, "value": -5})},
        )
    )
    assert outcome.returncode == 2 and "negative" in outcome.stderr


def test_ci_template_refuses_a_time_limit_of_zero():
    """srun --time=0 means no limit at all."""
    outcome = check_run(Command("preflight ci-template", ("preflight", "ci-template", "--time", "00:00")))
    assert outcome.returncode == 2 and "--time" in outcome.stderr


def check_run(command: Command):
    return assert_contract(run(command))


# --- reported: in files other engineers are editing; the lead flips these when they are fixed ---


def test_registry_switch_naming_a_function_of_the_wrong_shape():
    command = Command(
        "preflight",
        ("preflight", *QUICK),
        env={"CORDEE_PREFLIGHT_REGISTRY": "os:getcwd"},
        report_verb=True,
    )
    assert check_run(command).returncode == 2


def test_dry_run_refuses_data_shorter_than_one_sample():
    """One token, seq_len 64: the dry run said yes, training stops at its first batch."""
    assert check_run(dry_run("d", **{"cwd/d/a.tok": shard([0])})).returncode == 2


@pytest.mark.parametrize(
    "override, toml",
    [("model=1", None), (None, "dim = {a = 1}"), ("model.dim.x=1", None)],
)
def test_train_config_messages_name_the_real_problem(override, toml):
    tiny = (REPO / "platform/cordee/train/configs/tiny.toml").read_text()
    files = {"cwd/c.toml": tiny.replace("dim = 64", toml or "dim = 64")}
    args = ("train", "--dry-run", "--config", "c.toml" if toml else "tiny", *([override] if override else []))
    outcome = check_run(Command("train --dry-run", args, files=files if toml else {}))
    assert outcome.returncode == 2
    assert "did you mean 'model'?" not in outcome.stderr and "did you mean 'model.dim'?" not in outcome.stderr
    assert "known: )" not in outcome.stderr


def test_result_with_an_integer_beyond_float():
    from cordee.errors import InputError
    from cordee.preflight.results import Result

    with pytest.raises(InputError):
        Result.from_dict({"check": "x", "status": "ok", "value": 10**400})


def test_preflight_summary_agrees_with_the_exit_code_when_an_output_fails():
    command = Command("preflight", ("preflight", *QUICK, "--json=/proc/cordee.json"), report_verb=True)
    outcome = check_run(command)
    assert outcome.returncode == 2 and "(exit 0)" not in outcome.stdout


# --- storage and fine-tuning verbs (found by tests/fuzz: test_job_render_metrics ... test_train_from_hf) ---

JOB = ("job", "render", "--name", "r", "--nodes", "2", "--ntasks-per-node", "4", "--time", "01:00:00")
STEP_RECORD = '{"schema": "cordee.train.step/1", "step": 1, "step_time_s": STEP, "checkpoint_s": 2.0}\n'


def test_metrics_with_an_integer_beyond_float():
    """float() of a 401-digit step time: OverflowError, a traceback."""
    metrics = STEP_RECORD.replace("STEP", "1" + "0" * 400) + STEP_RECORD.replace("STEP", "0.5")
    args = (*JOB, "--config", "tiny", "--mtbf", "24", "--metrics", "m.jsonl")
    command = Command("job render --metrics", args, files={"cwd/m.jsonl": metrics})
    assert check_run(command).returncode == 0  # the record is skipped, the other one counts


@pytest.mark.parametrize("out", ["fifo", "zero.yaml"])  # a FIFO, a link to /dev/zero
def test_pack_force_replaces_only_files(out):
    """--force renamed the image over whatever OUT was: /dev/null itself, as root."""
    command = Command("data pack", ("data", "pack", "src", out, "--force", "--quiet"),
                      files={"cwd/src/a.txt": "x"}, may_write=(out,))  # fmt: skip
    with sandbox() as box:
        outcome = assert_contract(run_in(box, command))
        assert outcome.returncode == 2 and "not a regular file" in outcome.stderr
        assert box.cwd.joinpath("fifo").is_fifo() and os.readlink(box.cwd / "zero.yaml") == "/dev/zero"


def test_verify_without_fuse_leaves_no_copy_in_the_cache():
    """Where squashfuse cannot be used, verify unpacked the image into the container-image cache
    and kept it there (a dataset can be terabytes)."""
    with sandbox() as box:
        packed = run_in(box, Command("data pack", ("data", "pack", "src", "d.sqsh", "--quiet"),
                                     files={"cwd/src/a.txt": "x"}, may_write=("d.sqsh",)))  # fmt: skip
        assert assert_contract(packed).returncode == 0
        path = f"{{RUN}}/only:{os.path.dirname(sys.executable)}"  # unsquashfs, but no squashfuse
        tool = {"only/unsquashfs": Symlink(shutil.which("unsquashfs") or "unsquashfs")}
        command = Command(
            "data verify", ("data", "verify", "d.sqsh", "--quiet"), env={"PATH": path}, files=tool
        )
        assert assert_contract(run_in(box, command)).returncode == 0


def manifest(extra: dict) -> str:
    return json.dumps({"schema": "cordee.checkpoint/1", "step": 1, "world_size": 1, "complete": True,
                       "files": {".metadata": 4}, "extra": extra})  # fmt: skip


def test_export_error_is_the_only_line():
    """The warning that the source model is gone came before the error: two lines."""
    files = {"cwd/ck/cordee.json": manifest({"hf_source": "/no/such/model"}), "cwd/ck/.metadata": "junk"}
    outcome = check_run(Command("export", ("export", "ck", ""), files=files))
    assert outcome.returncode == 2


CHAT_BOMBS = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "repeated text": "{{ 'a' * 10**10 }}",
    "a text doubled": "{% set ns = namespace(x='a') %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}"
    "{% endfor %}{{ ns.x }}",
    "text written in a loop": "{% set x = 'a' * 100000 %}{% for i in range(100000) %}{{ x }}{% endfor %}",
}


@pytest.mark.parametrize("case", sorted(CHAT_BOMBS))
def test_chat_template_is_bounded(case):
    """A chat template is code from the model directory: it hung, or took memory without bound."""
    from fuzz.artifacts import GOOD_MESSAGES, chat_model_files

    files = {f"cwd/model/{k}": v for k, v in chat_model_files().items()}
    files |= {
        "cwd/model/chat_template.jinja": CHAT_BOMBS[case],
        "cwd/c.jsonl": json.dumps({"messages": GOOD_MESSAGES}),
    }
    args = ("data", "prepare", "--chat", "c.jsonl", "--model-dir", "model", "--seq-len", "64", "-o", "out")
    outcome = check_run(Command("data prepare --chat", args, files=files, may_write=("out",)))
    assert outcome.returncode == 2 and "chat template was stopped" in outcome.stderr


@pytest.mark.parametrize("field", ["rope_theta", "rms_norm_eps", "vocab_size"])
def test_hf_config_with_an_integer_beyond_float(field):
    from fuzz.artifacts import HF_CONFIG

    config = json.dumps({**HF_CONFIG, "rope_parameters": None, field: 10**400})
    args = ("train", "--dry-run", "--config", "finetune-llama", "model.from_hf=hf")
    outcome = check_run(Command("train from_hf", args, files={"cwd/hf/config.json": config}))
    assert outcome.returncode == 2 and field in outcome.stderr


def test_export_of_a_manifest_nested_too_deeply():
    """cordee.json of 100000 nested lists: RecursionError (export; load_latest on resume too)."""
    outcome = check_run(Command("export", ("export", "ck", "out"), files={"cwd/ck/cordee.json": DEEP_JSON}))
    assert outcome.returncode == 2


def test_edf_check_home_warning_needs_a_home():
    """HOME='' expands ${HOME}:/home to ':/home': an error, and a warning that '' is all of $HOME."""
    edf = {
        "cwd/e.toml": 'image = "ubuntu:22.04"\nmounts = ["$\\u007bHOME}:/home"]\n'
    }  # {HOME}: a placeholder
    command = Command("edf check", ("edf", "check", "e.toml"), env={"HOME": ""}, report_verb=True, files=edf)
    outcome = check_run(command)
    assert "all of $HOME" not in outcome.stdout
