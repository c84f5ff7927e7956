"""Hostile files as hypothesis strategies: image specs (the repo's real specs with fields broken,
or whole files of the YAML bomb kind), EDFs (TOML documents, base_environment chains), and the
documents of preflight, train and data: result JSON, system profiles, train configs, token shards,
text and JSONL inputs, tokenizer.json files (the shipped ones with fields broken, or whole files
that no parser should choke on).

A strategy gives a `Doc`: the files to create (run-relative path -> content) and the name or path
the verb is given."""

from __future__ import annotations

import copy
import json
import math
import struct
import tomllib
from typing import Any, NamedTuple

import yaml
from hypothesis import strategies as st

from fuzz.hostile import NASTY_TEXT, huge_numbers, numbers, paths, text, values
from fuzz.sandbox import NAME_MAX, REPO

SPEC_NAMES = sorted(p.stem for p in (REPO / "images").glob("*.yaml"))
_SPECS = {name: yaml.safe_load((REPO / "images" / f"{name}.yaml").read_text()) for name in SPEC_NAMES}
EDF_KEYS = ["base_environment", "image", "workdir", "entrypoint", "writable", "mounts", "env", "annotations"]
ANNOTATIONS = [
    "com.hooks.ssh.port", "com.hooks.ssh.enabled", "com.hooks.ssh.authorize_ssh_key", "com.hooks.cxi.enabled",
    "com.hooks.aws_ofi_nccl.enabled", "com.hooks.aws_ofi_nccl.variant", "com.hooks.netstack.source",
    "com.example.unknown",
]  # fmt: skip


# `$` as EDF values carry it: references, escapes and the ones that are neither
ENV_VALUES = st.sampled_from(
    ["${HOME}", "${UNDEFINED_VAR}", "${X:-y}", "$${HOME}", "${", "$", "a$b", "${HOME", "${}"]
)


class Doc(NamedTuple):
    files: dict[str, Any]  # run-relative path -> bytes/str (or a sandbox Symlink/Fifo/Directory)
    arg: str  # what the command line names: a spec or EDF name, or a path


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A YAML document of about 1 KB that stands for width**levels strings."""
    lines = ["kind: container", f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def deep_yaml(depth: int) -> str:
    return "kind: container\ndescription: " + "[" * depth + "]" * depth + "\n"


def deep_toml(depth: int) -> str:
    return "image = " + "[" * depth + "]" * depth + "\n"


WHOLE_SPECS = st.one_of(
    st.builds(alias_bomb, st.integers(3, 9), st.integers(2, 9)),
    st.integers(50, 200_000).map(deep_yaml),
    st.integers(50, 20_000).map(lambda n: "kind: container\nx: " + "{a: " * n + "1" + "}" * n + "\n"),
    huge_numbers().map(lambda n: f"kind: container\ndescription: x\nfabric_profile: {n}\n"),
    st.sampled_from(
        [
            "",
            "---\n---\n",
            "kind: container\n---\nkind: uenv\n",
            "!!python/object/apply:os.system ['id']\n",
            "kind: !!binary AAAA\n",
            "\ufeffkind: container\n",
            "kind: container\nkind: uenv\n",
            "[]\n",
            "42\n",
            "kind:\tcontainer\n",
            "kind: container\ndescription: *undefined\n",
            "? [a, b]\n: c\n",
        ]
    ),  # fmt: skip
)


def _walk(data: Any, draw) -> tuple[Any, Any]:
    """(container, key) of a random node of the spec, for a mutation to replace."""
    node, key = None, None
    while isinstance(data, (dict, list)) and data and (key is None or draw(st.booleans())):
        keys = list(data) if isinstance(data, dict) else list(range(len(data)))
        node, key = data, draw(st.sampled_from(keys))
        data = data[key]
    return node, key


SCALARS = st.one_of(
    values(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
NODES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text(), kids, max_size=3), max_leaves=8
)


@st.composite
def spec_data(draw) -> dict:
    data = copy.deepcopy(_SPECS[draw(st.sampled_from(SPEC_NAMES))])
    for _ in range(draw(st.integers(1, 3))):
        node, key = _walk(data, draw)
        choice = draw(st.sampled_from(["set", "set", "delete", "unknown", "env", "edf"]))
        if choice == "env":  # values that reach ENV lines and the EDF's [env]
            data.setdefault("env", {})[draw(text() | st.just("CORDEE_X"))] = draw(text() | ENV_VALUES)
        elif choice == "edf" and data.get("kind") == "container":  # EDF values, ${VAR} expanded at run time
            edf = data.setdefault("edf", {})
            if draw(st.booleans()):
                edf["env"] = {"CORDEE_X": draw(ENV_VALUES | text())}
            else:
                edf["mounts"] = [draw(st.sampled_from(["/tmp", "/capstor"])) + draw(ENV_VALUES) + ":/data"]
        elif choice == "unknown":
            data[draw(text())] = draw(NODES)
        elif node is not None and choice == "delete":
            del node[key]
        elif node is not None:
            node[key] = draw(NODES)
    return data


@st.composite
def specs(draw) -> Doc:
    """A spec file and how it is named: NAME in the root's images/, or a path."""
    if draw(st.integers(0, 3)) == 0:
        body = draw(WHOLE_SPECS)
    else:
        body = yaml.safe_dump(draw(spec_data()), allow_unicode=True, sort_keys=False)
    name = draw(st.sampled_from(["fuzzed", "fuzzed", "Fuzzed", "a" * 65, "a" * 300, "a..b", "x\ny"]))
    where = draw(st.sampled_from(["root", "cwd", "cwd-absolute"]))
    if len(f"{name}.yaml") > NAME_MAX:  # no such file can exist: the name alone is the input
        return Doc({}, f"./{name}.yaml" if where == "cwd" else name)
    if where == "root":
        return Doc({f"root/images/{name}.yaml": body}, name)
    prefix = "./" if where == "cwd" else "{CWD}/"
    return Doc({f"cwd/{name}.yaml": body}, f"{prefix}{name}.yaml")


@st.composite
def dollar_specs(draw) -> Doc:
    """A valid container spec but for one EDF value with a `$` in it: render and `edf check` must
    agree on it (render refuses it, or writes an EDF that passes)."""
    name = draw(st.sampled_from([n for n in SPEC_NAMES if _SPECS[n]["kind"] == "container"]))
    data = copy.deepcopy(_SPECS[name])
    value = draw(ENV_VALUES)
    edf = data.setdefault("edf", {})
    if draw(st.booleans()):
        edf["env"] = {**edf.get("env", {}), "CORDEE_X": value}
    else:
        edf["mounts"] = [*edf.get("mounts", []), f"/tmp{value}:/data"]
    return Doc({"cwd/dollar.yaml": yaml.safe_dump(data, sort_keys=False)}, "./dollar.yaml")


def spec_args() -> st.SearchStrategy[Doc]:
    """A spec to name: a generated one, a real one, or a hostile path or name."""
    real = st.sampled_from(SPEC_NAMES).map(lambda n: Doc({}, n))
    odd = (paths() | text()).map(lambda p: Doc({}, p))
    return st.one_of(specs(), specs(), dollar_specs(), real, odd)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):  # a TOML basic string: every control character escaped
        return (
            '"' + "".join(c if c >= " " and c not in '"\\\x7f' else f"\\u{ord(c):04x}" for c in value) + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '""'  # None: TOML has no null


def toml_text(doc: dict[str, Any]) -> str:
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    lines = [f"{toml_value(k)} = {toml_value(v)}" for k, v in doc.items() if k not in tables]
    for name, table in tables.items():
        lines.append(f"[{toml_value(name)}]")
        lines += [f"{toml_value(str(k))} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


MOUNT_FLAGS = st.sampled_from(
    ["", "ro", "rw", "sqsh", "ro+private", "nofail", "x-create=dir", "bogus", "ro+sqsh"]
)
MOUNTS = st.builds(
    lambda src, dst, flags, sep: sep.join(p for p in (src, dst, flags) if p) if sep else src,
    paths() | st.sampled_from(["/capstor", "/iopsstor", "${SCRATCH}", "/tmp"]),
    st.sampled_from(["/data", "/x", "relative", "", "/data:/y"]) | text(),
    MOUNT_FLAGS | text(),
    st.sampled_from([":", ":", None]),
)
ENV_VALUES = st.sampled_from(
    ["${HOME}", "${UNDEFINED_VAR}", "${X:-y}", "$${HOME}", "${", "$", "a$b", "${HOME"]
)


@st.composite
def edf_tables(draw, bases: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if bases:
        doc["base_environment"] = bases if len(bases) > 1 or draw(st.booleans()) else bases[0]
    for key in draw(st.lists(st.sampled_from(EDF_KEYS[1:] + ["unknown_key"]), max_size=5, unique=True)):
        if key == "mounts":
            doc[key] = draw(st.lists(MOUNTS, max_size=3) | SCALARS)
        elif key == "env":
            doc[key] = draw(
                st.dictionaries(text() | st.just("OK_NAME"), ENV_VALUES | text(), max_size=3) | SCALARS
            )
        elif key == "annotations":
            doc[key] = draw(st.dictionaries(st.sampled_from(ANNOTATIONS), numbers() | text(), max_size=3))
        elif key == "image":
            doc[key] = draw(
                paths()
                | st.sampled_from(["ubuntu:22.04", "nvcr.io#nvidia/pytorch:25.06-py3", "{CWD}/x.sqsh"])
                | text()
            )
        else:
            doc[key] = draw(SCALARS | st.booleans())
    return doc


WHOLE_EDFS = st.one_of(
    st.integers(50, 200_000).map(deep_toml),
    st.integers(50, 20_000).map(lambda n: "image = " + "{a = " * n + "1" + "}" * n + "\n"),
    huge_numbers().map(lambda n: f"image = {n}\n"),
    st.sampled_from(['image = "a"\nimage = "b"\n', "[env\n", "\ufeffimage = 'x'\n", "= 1\n", "[[env]]\n"]),
)


@st.composite
def edfs(draw) -> Doc:
    """An EDF with a base_environment graph: a chain, a fan-out (each file naming the next one
    several times, up to 12 levels), a cycle, or bases that are hostile paths."""
    shape = draw(st.sampled_from(["single", "chain", "fanout", "cycle", "odd-base", "whole"]))
    files: dict[str, Any] = {}
    if shape == "whole":
        files["edf/main.toml"] = draw(WHOLE_EDFS)
    elif shape in ("chain", "fanout", "cycle"):
        depth, fan = draw(st.integers(1, 12)), draw(st.integers(2, 4)) if shape == "fanout" else 1
        for i in range(depth):
            nxt = f"level{i + 1}" if i + 1 < depth else ("main" if shape == "cycle" else None)
            files[f"edf/level{i}.toml"] = toml_text(draw(edf_tables([nxt] * fan if nxt else [])))
        files["edf/main.toml"] = toml_text(draw(edf_tables(["level0"] * fan)))
    else:
        bases = draw(st.lists(paths() | text(), min_size=1, max_size=2)) if shape == "odd-base" else []
        files["edf/main.toml"] = toml_text(draw(edf_tables(bases)))
    arg = draw(st.sampled_from(["main", "{EDF}/main.toml", "main.toml"]))
    if arg == "main.toml":  # a relative path: from the working directory
        files = {("cwd/main.toml" if k == "edf/main.toml" else k): v for k, v in files.items()}
    return Doc(files, arg)


def edf_args() -> st.SearchStrategy[Doc]:
    odd = (paths() | text() | st.sampled_from(NASTY_TEXT)).map(lambda p: Doc({}, p))
    return st.one_of(edfs(), edfs(), edfs(), odd)


def nccl_conf() -> st.SearchStrategy[str]:
    """An NCCL_CONF_FILE body: KEY=VALUE lines, hostile ones included."""
    line = st.builds(
        lambda k, v: f"{k}={v}", st.sampled_from(["NCCL_NET_PLUGIN", "NCCL_DEBUG", "X"]), values()
    )
    return st.lists(line | text(), max_size=4).map("\n".join) | st.just(json.dumps({"a": 1}))


# --- preflight, train and data documents -----------------------------------------------------------

SYSTEMS_DIR = REPO / "platform/cordee/preflight/systems"
SYSTEM_NAMES = sorted(p.stem for p in SYSTEMS_DIR.glob("*.toml"))
_SYSTEMS = {name: tomllib.loads((SYSTEMS_DIR / f"{name}.toml").read_text()) for name in SYSTEM_NAMES}
TRAIN_DIR = REPO / "platform/cordee/train/configs"
TRAIN_NAMES = sorted(p.stem for p in TRAIN_DIR.glob("*.toml"))
_TRAIN = {name: tomllib.loads((TRAIN_DIR / f"{name}.toml").read_text()) for name in TRAIN_NAMES}
# metrics a results file may carry: the measured ones (baseline takes their medians) and health ones
METRICS = ["gemm_bf16_tflops", "hbm_copy_gbps", "cpu_gemm_gflops", "mem_copy_gbps", "pair_busbw_gbps",
           "all_reduce_busbw_inter_gbps", "all_gather_busbw_intra_gbps", "gpu_temp_idle_c", "ecc_uncorrected",
           "straggler_ratio"]  # fmt: skip
STATUSES = ["ok", "skip", "warn", "fail", "error"]


def _mutated(draw, data: Any, most: int) -> Any:
    """`data` with up to `most` nodes replaced, deleted or added (NODES: hostile scalars and trees)."""
    for _ in range(draw(st.integers(0, most))):
        node, key = _walk(data, draw)
        choice = draw(st.sampled_from(["set", "set", "delete", "unknown"]))
        if choice == "unknown" and isinstance(data, dict):
            data[draw(text())] = draw(NODES)
        elif node is not None and choice == "delete":
            del node[key]
        elif node is not None:
            node[key] = draw(NODES)
    return data


ODD_JSON = ["", "null", "[]", "42", '"x"', "\ufeff{}", '{"schema": "cordee.preflight/1"}', "{", "NaN",
            '{"schema": "cordee.preflight/1", "results": [1]}', '{"a": 1, "a": 2}',
            b"\xff\xfe{\x00}"]  # fmt: skip
WHOLE_JSON = st.one_of(
    st.integers(50, 200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(50, 20_000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
    huge_numbers().map(lambda n: f'{{"schema": "cordee.preflight/1", "results": [], "x": {n}}}'),
    st.sampled_from(ODD_JSON),
)
RESULT = st.fixed_dictionaries(
    {"check": st.sampled_from(["compute.gemm", "memory.copy", "collective.all_reduce.inter", "gpu.ecc"]),
     "status": st.sampled_from(STATUSES), "value": st.floats(0.01, 1e4) | st.just(0) | st.none(),
     "data": st.fixed_dictionaries({"metric": st.sampled_from(METRICS)})},
    optional={"node": st.sampled_from(["n0", "n1", "nid001", ""]), "rank": st.integers(0, 9),
              "unit": st.sampled_from(["GB/s", "TFLOP/s", "C", ""])},
)  # fmt: skip


@st.composite
def results_args(draw) -> tuple[dict, list[str]]:
    """(files, the RESULTS... arguments of `preflight baseline`): 1 to 3 result files (`cordee
    preflight --json`), plausible runs with fields broken or whole JSON bombs; or hostile paths."""
    if draw(st.integers(0, 3)) == 0:
        return {}, draw(st.lists(paths() | text(), min_size=1, max_size=2))
    files, system = {}, draw(st.sampled_from(SYSTEM_NAMES))
    for i in range(draw(st.integers(1, 3))):
        results = draw(st.lists(RESULT, min_size=1, max_size=8))
        results[0] = _mutated(draw, results[0], 2)  # mostly within a result, sometimes the envelope
        doc = {"schema": "cordee.preflight/1", "system": system, "results": results}
        doc = _mutated(draw, doc, 1) if draw(st.integers(0, 3)) == 0 else doc
        files[f"cwd/r{i}.json"] = draw(WHOLE_JSON) if draw(st.integers(0, 5)) == 0 else json.dumps(doc)
    return files, [f"{{CWD}}/{name[4:]}" for name in files]


@st.composite
def system_profiles(draw) -> Doc:
    """A system profile file (TOML): a shipped profile with fields broken, or a TOML bomb."""
    if draw(st.integers(0, 4)) == 0:
        body = draw(WHOLE_EDFS)
    else:
        data = copy.deepcopy(_SYSTEMS[draw(st.sampled_from(SYSTEM_NAMES))])
        body = toml_text(_mutated(draw, data, 3))
    arg = draw(st.sampled_from(["{CWD}/profile.toml", "profile.toml", "./profile.toml"]))
    return Doc({"cwd/profile.toml": body}, arg)


@st.composite
def profile_args(draw) -> Doc:
    """A system profile file, or (one time in four) a hostile path."""
    return draw(system_profiles()) if draw(st.integers(0, 3)) else Doc({}, draw(paths() | text()))


@st.composite
def train_configs(draw) -> Doc:
    """A train config: shipped by name, a shipped one with keys broken, or a TOML bomb."""
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return Doc({}, draw(st.sampled_from(TRAIN_NAMES)))
    if shape == 1:
        body = draw(WHOLE_EDFS)
    else:
        body = toml_text(_mutated(draw, copy.deepcopy(_TRAIN[draw(st.sampled_from(TRAIN_NAMES))]), 3))
    arg = draw(st.sampled_from(["{CWD}/c.toml", "./c.toml", "c.toml"]))
    return Doc({"cwd/c.toml": body}, arg)


@st.composite
def train_config_args(draw) -> Doc:
    """A train config, or (one time in five) a hostile path."""
    return draw(train_configs()) if draw(st.integers(0, 4)) else Doc({}, draw(paths() | text()))


TRAIN_KEYS = sorted(
    {f"{k}.{sub}" if isinstance(v, dict) else k for d in _TRAIN.values() for k, v in d.items()
     for sub in (v if isinstance(v, dict) else [None])}
    | {"checkpoint.dir", "checkpoint.interval", "data.seed", "data.path", "stop_signals", "peak_tflops",
       "metrics_file", "device", "precision", "model", "model.dim.x"}
)  # fmt: skip
TRAIN_VALUES = [
    "1",
    "0",
    "-1",
    "auto",
    "true",
    "nan",
    "1e400",
    "1_0",
    "SIGUSR1,SIGKILL",
    "",
    "cpu",
    "synthetic",
]


def train_overrides() -> st.SearchStrategy[list[str]]:
    """KEY=VALUE words for `cordee train`: known keys with odd values, odd keys, no `=` at all."""
    override = st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(TRAIN_KEYS) | text(),
        st.sampled_from(TRAIN_VALUES) | values(),
    )
    return st.lists(override | text(), max_size=3)


SHARD_HEADER = struct.Struct("<8sIIQQQ24x")  # magic, version, dtype code, tokens, documents, max token
_U32, _U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
SHARD_CORRUPTIONS = {  # header field -> hostile values for it
    "magic": st.sampled_from([b"CORDTOK\n", b"\0" * 8, b"cordtok\0", b"\xff" * 8]),
    "version": st.sampled_from([0, 2, 2**32 - 1]) | _U32,
    "code": st.sampled_from([0, 3, 2**32 - 1]),
    "tokens": st.sampled_from([0, 1, 2**63, 2**64 - 1]) | _U64,
    "documents": st.sampled_from([2**64 - 1]) | _U64,
    "max_token": st.sampled_from([0, 255, 511, 512, 2**16, 2**32, 2**64 - 1]) | _U64,
}


@st.composite
def shard_bytes(draw) -> bytes:
    """A token shard: a header and tokens, up to two header fields broken, perhaps cut short or
    with bytes after its end, perhaps tokens beyond the header's largest id or the vocabulary."""
    code = draw(st.sampled_from([1, 1, 1, 2]))
    width = 4 if code == 2 else 2
    tokens = draw(st.lists(st.integers(0, 300) | st.sampled_from([511, 512, 2**16 - 1]), max_size=200))
    fields = {"magic": b"CORDTOK\0", "version": 1, "code": code, "tokens": len(tokens),
              "documents": tokens.count(256), "max_token": max(tokens, default=0)}  # fmt: skip
    for name in draw(st.lists(st.sampled_from(list(fields)), max_size=2, unique=True)):
        fields[name] = draw(SHARD_CORRUPTIONS[name])
    data = SHARD_HEADER.pack(*fields.values()) + b"".join(t.to_bytes(width, "little") for t in tokens)
    end = draw(st.sampled_from([None] * 6 + [0, 8, 63, 64, -1]))
    return data[:end] + draw(st.sampled_from([b""] * 6 + [b"\0", b"\0\0"]))


@st.composite
def token_data(draw) -> Doc:
    """A data.path: a directory of shards (with an index.json, right, wrong or broken, or none),
    one shard file, or a hostile path."""
    shape = draw(st.sampled_from(["dir", "dir", "file", "odd"]))
    if shape == "odd":
        return Doc({}, draw(paths() | text()))
    names = draw(st.lists(st.sampled_from(["shard-00000.tok", "shard-00001.tok", "b.tok", "x\ny.tok"]),
                          min_size=1, max_size=3, unique=True))  # fmt: skip
    shards = {name: draw(shard_bytes()) for name in names}
    files: dict[str, Any] = {f"cwd/data/{name}": data for name, data in shards.items()}
    if shape == "file":
        return Doc(files, f"{{CWD}}/data/{names[0]}")
    index = draw(st.sampled_from(["none", "plain", "mutated", "whole"]))
    if index != "none":  # token counts as for uint16 shards
        counts = [{"name": n, "tokens": (len(d) - SHARD_HEADER.size) // 2} for n, d in shards.items()]
        doc = {"schema": "cordee.data/1", "vocab_size": 257, "shards": counts}
        doc = _mutated(draw, doc, 2) if index == "mutated" else doc
        files["cwd/data/index.json"] = draw(WHOLE_JSON) if index == "whole" else json.dumps(doc)
    return Doc(files, "{CWD}/data")


JSONL_LINES = st.one_of(
    text().map(lambda t: json.dumps({"text": t})),
    st.sampled_from(['{"other": 1}', '{"text": 1}', '{"text": null}', "[]", "{", "NaN", "", " ",
                     '{"text": "\\ud800"}']),
    st.integers(50, 100_000).map(lambda n: "[" * n + "]" * n),
    huge_numbers().map(lambda n: f'{{"text": {n}}}'),
    text(),
)  # fmt: skip


@st.composite
def prepare_inputs(draw) -> tuple[dict, list[str]]:
    """(files, the INPUT... arguments) of `cordee data prepare`: JSONL and text files written here,
    the sandbox's hostile files, hostile paths."""
    files, args = {}, []
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["jsonl", "text", "hostile", "odd"]))
        if kind == "jsonl":
            files[f"cwd/in{i}.jsonl"] = "\n".join(draw(st.lists(JSONL_LINES, min_size=1, max_size=6))) + "\n"
            args.append(f"{{CWD}}/in{i}.jsonl")
        elif kind == "text":
            files[f"cwd/in{i}.txt"] = draw(text() | st.binary(max_size=200))
            args.append(f"in{i}.txt")
        else:
            args.append(draw(paths() if kind == "hostile" else text()))
    return files, args


TOKENIZER = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
    "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1, "b": 2, "</s>": 3}, "unk_token": "[UNK]"},
}  # fmt: skip
ODD_TOKENIZERS = [  # valid JSON the tokenizers library reads badly: bad ids, a panic, sparse ids
    {**TOKENIZER, "model": {**TOKENIZER["model"], "unk_token": "zzz"}},
    {**TOKENIZER, "model": {**TOKENIZER["model"], "vocab": {"[UNK]": 0, "</s>": 70000}}},
    {**TOKENIZER, "model": {**TOKENIZER["model"], "vocab": {"[UNK]": 0, "</s>": 2**32 - 1}}},
    {**TOKENIZER, "model": {**TOKENIZER["model"], "vocab": {"[UNK]": 0, "</s>": 2**40}}},
    {**TOKENIZER, "normalizer": {"type": "Precompiled", "precompiled_charsmap": "AAAA"}},
]


@st.composite
def tokenizer_files(draw) -> Doc:
    """A tokenizer.json: a small WordLevel one, broken in fields or whole, or a hostile path."""
    shape = draw(st.sampled_from(["mutated", "odd", "whole", "path"]))
    if shape == "path":
        return Doc({}, draw(paths() | text()))
    if shape == "whole":
        body = draw(WHOLE_JSON)
    else:
        data = draw(st.sampled_from(ODD_TOKENIZERS)) if shape == "odd" else TOKENIZER
        body = json.dumps(_mutated(draw, copy.deepcopy(data), 2))
    return Doc({"cwd/tokenizer.json": body}, "{CWD}/tokenizer.json")
