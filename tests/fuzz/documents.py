"""Hostile files as hypothesis strategies: image specs (the repo's real specs with fields broken,
or whole files of the YAML bomb kind) and EDFs (TOML documents, base_environment chains).

A strategy gives a `Doc`: the files to create (run-relative path -> content) and the name or path
the verb is given."""

from __future__ import annotations

import copy
import json
import math
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
