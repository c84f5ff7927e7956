"""Hostile files of the storage and fine-tuning verbs as hypothesis strategies: the trainer's
metrics JSONL (`job render --metrics`), directory trees to pack and squashfs images to verify
(`data pack`, `data verify`), checkpoint directories (`export`), Hugging Face model directories
(`train model.from_hf=DIR`: config.json) and chat sets (`data prepare --chat`: tokenizer_config.json,
chat templates, conversations).

Like documents.py, a strategy gives a `Doc` (files to create, the argument naming them). Images
and the small tokenizer are built on first use (mksquashfs, the tokenizers library) and cached.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from fuzz.documents import _TRAIN, NODES, WHOLE_JSON, Doc, _mutated
from fuzz.hostile import NASTY_TEXT, huge_numbers, paths, text, values
from fuzz.sandbox import Directory, Fifo, Symlink

# numbers a JSON document may carry where a float is read: tiny, huge, non-finite, not numbers at all
JSON_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e-300, 1e308, 2**63, True, None, "1", [], {}]),
    st.integers(-(2**70), 2**70),
    huge_numbers().map(lambda n: json.loads(n) if len(n) < 4000 else 10**400),
)

TEXT_JSON = WHOLE_JSON.filter(lambda doc: isinstance(doc, str))  # a line of a JSONL file


def _json(value) -> str:
    """JSON as Python writes it: NaN and Infinity included (the trainer's json.dumps would too)."""
    return json.dumps(value)


@st.composite
def metrics_files(draw) -> Doc:
    """The trainer's metrics JSONL: step records with hostile step_time_s and checkpoint_s, records
    of other schemas, lines that are no record; a whole hostile file; or a hostile path."""
    shape = draw(st.sampled_from(["records", "records", "records", "whole", "path"]))
    if shape == "path":
        return Doc({}, draw(paths() | text()))
    if shape == "whole":
        body = draw(WHOLE_JSON | st.binary(max_size=64))
    else:
        lines = []
        for _ in range(draw(st.integers(1, 6))):
            record = {"schema": "cordee.train.step/1", "step": draw(st.integers(0, 9)),
                      "step_time_s": draw(st.floats(0.01, 10) | JSON_NUMBERS),
                      "checkpoint_s": draw(st.floats(0.01, 100) | st.just(0) | JSON_NUMBERS)}  # fmt: skip
            kind = draw(st.sampled_from(["plain"] * 4 + ["mutated", "line"]))
            if kind == "mutated":
                record = _mutated(draw, record, 2)
            lines.append(draw(TEXT_JSON | text()) if kind == "line" else _json(record))
        body = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n \n"]))
    return Doc({"cwd/m.jsonl": body}, draw(st.sampled_from(["m.jsonl", "{CWD}/m.jsonl"])))


# --- data pack / data verify -----------------------------------------------------------------------

TREE_ODDITIES = {
    "a fifo": {"src/pipe": Fifo()},
    "a link out": {"src/out": Symlink("{SENTINEL}")},
    "a dangling link": {"src/dangling": Symlink("no-such-file")},
    "a link loop": {"src/loop": Symlink("loop")},
    "a device link": {"src/zero": Symlink("/dev/zero")},
    "the manifest's name": {"src/.cordee-manifest.json": "{}"},
    "odd names": {"src/a\nb": "x", "src/\x1b[2J": "y", "src/é😀": "z", "src/" + "n" * 255: "w"},
    "deep": {"src/" + "d/" * 60 + "f": "deep"},
    "an empty dir": {"src/empty": Directory()},
    "an empty file": {"src/empty.txt": ""},
}


@st.composite
def pack_sources(draw) -> Doc:
    """SRC of `data pack`: a small tree with up to two oddities, or a hostile path."""
    if draw(st.integers(0, 4)) == 0:
        return Doc({}, draw(paths() | text()))
    files = {"cwd/src/a.txt": "one\n", "cwd/src/sub/b.bin": draw(st.binary(max_size=64))}
    for name in draw(st.lists(st.sampled_from(sorted(TREE_ODDITIES)), max_size=2, unique=True)):
        files |= {f"cwd/{k}": v for k, v in TREE_ODDITIES[name].items()}
    return Doc(files, draw(st.sampled_from(["src", "{CWD}/src", "src/", "./src/../src"])))


@functools.cache
def squashfs(tree: tuple[tuple[str, bytes], ...]) -> bytes:
    """The bytes of a squashfs image of `tree` ((path, content) pairs), made by mksquashfs."""
    with tempfile.TemporaryDirectory(prefix="cordee-fuzz-image-") as tmp:
        root = Path(tmp, "root")
        for rel, data in tree:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        root.mkdir(exist_ok=True)
        out = Path(tmp, "image.sqsh")
        argv = ["mksquashfs", str(root), str(out), "-noappend", "-quiet", "-no-progress", "-all-root"]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        return out.read_bytes()


def manifest_text(files: dict[str, bytes]) -> str:
    """A manifest as `data pack` writes it (cordee.pack/1), for these files at the image root."""
    import hashlib

    entries = [{"path": p, "type": "file", "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
               for p, d in sorted(files.items())]  # fmt: skip
    return json.dumps({"schema": "cordee.pack/1", "files": len(entries), "entries": entries})


@st.composite
def verify_images(draw) -> Doc:
    """IMAGE of `data verify`: an image whose manifest is right, broken in fields or whole, or
    missing; one cut short, with bytes flipped, or only a superblock; or a hostile path."""
    shape = draw(st.sampled_from(["image", "image", "image", "cut", "flipped", "header", "path"]))
    if shape == "path":
        return Doc({}, draw(paths() | text()))
    if shape == "header":
        return Doc({"cwd/x.sqsh": b"hsqs" + draw(st.binary(min_size=0, max_size=120))}, "x.sqsh")
    files = {"a.txt": b"one\n", "sub/b.txt": b"two\n"}
    manifest = manifest_text(files)
    change = draw(st.sampled_from(["none", "none", "fields", "whole", "absent", "file", "extra"]))
    if change == "fields":
        manifest = json.dumps(_mutated(draw, json.loads(manifest), 3))
    elif change == "whole":
        manifest = draw(WHOLE_JSON)
    elif change == "file":  # the tree differs from what the manifest says
        files = {**files, "a.txt": b"changed\n"}
    elif change == "extra":
        files = {**files, "extra.txt": b"not listed\n"}
    tree = dict(files)
    if change != "absent":
        tree[".cordee-manifest.json"] = manifest.encode() if isinstance(manifest, str) else manifest
    image = squashfs(tuple(sorted(tree.items())))
    if shape == "cut":
        image = image[: draw(st.integers(96, len(image) - 1))]
    elif shape == "flipped":
        at = draw(st.integers(96, len(image) - 1))
        image = image[:at] + bytes([image[at] ^ 0xFF]) + image[at + 1 :]
    return Doc({"cwd/image.sqsh": image}, draw(st.sampled_from(["image.sqsh", "{CWD}/image.sqsh"])))


# --- export: checkpoint directories ----------------------------------------------------------------

TINY_MODEL = dict(_TRAIN["tiny"]["model"])


def _step_manifest(draw) -> dict:
    model = copy.deepcopy(TINY_MODEL)
    model = _mutated(draw, model, 2) if draw(st.booleans()) else model
    extra = {"model": model, "hf_source": draw(st.sampled_from(["", "{CWD}/hf", "{CWD}/fifo"]) | paths())}
    return {"schema": "cordee.checkpoint/1", "step": 1, "world_size": 1, "complete": True,
            "files": {".metadata": 4}, "extra": extra}  # fmt: skip


@st.composite
def checkpoints(draw) -> Doc:
    """CHECKPOINT of `export`: empty, a file, a root whose `latest` names nothing (or is a FIFO),
    a step directory with a manifest broken in fields or whole and a garbage DCP .metadata; or a
    hostile path. None reaches a real export."""
    shape = draw(st.sampled_from(["step", "step", "step", "root", "empty", "file", "path"]))
    if shape == "path":
        return Doc({}, draw(paths() | text()))
    if shape == "empty":
        return Doc({"cwd/ck": Directory()}, "ck")
    if shape == "file":
        return Doc({"cwd/ck": "x"}, "ck")
    manifest = _step_manifest(draw)
    kind = draw(st.sampled_from(["plain", "mutated", "mutated", "whole"]))
    body = (
        draw(WHOLE_JSON)
        if kind == "whole"
        else _json(_mutated(draw, manifest, 2) if kind == "mutated" else manifest)
    )
    metadata = draw(st.sampled_from([b"junk", b"", b"\x80\x04N.", b"\x80\x04\x95"]) | st.binary(max_size=16))
    step = {"cwd/ck/step-00000001/cordee.json": body, "cwd/ck/step-00000001/.metadata": metadata}
    if shape == "step":
        return Doc(step, draw(st.sampled_from(["ck/step-00000001", "{CWD}/ck/step-00000001/"])))
    latest = draw(st.sampled_from(["step-00000001", "step-00000009", "../../..", "\n", "step-1"]) | text())
    latest_file = Fifo() if draw(st.integers(0, 5)) == 0 else latest
    return Doc({**step, "cwd/ck/latest": latest_file}, "ck")


EXPORT_OUT = ["{CWD}/hf-out", "hf-out", "{CWD}/dir.toml", "{CWD}/fifo", "{CWD}/empty.toml", "{CWD}/outside",
              "{CWD}/ck", "", "{CWD}/" + "o" * 300, "{CWD}/a\nb", "{CWD}/missing/x/y"]  # fmt: skip


# --- train model.from_hf: config.json ---------------------------------------------------------------

HF_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 64,
    "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}  # fmt: skip
HF_ODD = [
    {"model_type": draw_type} for draw_type in ("gpt2", "", None, 1, "LLAMA", "apertus")
] + [
    {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
    {"rope_parameters": {"rope_type": "yarn", "factor": 2}},
    {"rope_parameters": [], "rope_scaling": "x"},
    {"rope_parameters": None, "rope_theta": 10**400},
    {"rope_parameters": None, "rope_scaling": {"type": "llama3", "factor": 10**400}},
    {"head_dim": 10**30, "num_attention_heads": 10**30},
    {"hidden_size": 2**62, "num_hidden_layers": 2**40},
    {"vocab_size": 1e400}, {"rms_norm_eps": 10**400}, {"attention_bias": "yes"}, {"hidden_act": None},
]  # fmt: skip


@st.composite
def hf_dirs(draw) -> Doc:
    """model.from_hf=DIR: a directory whose config.json is a small Llama's with fields broken (types,
    huge numbers, unknown model_type, missing fields) or a whole hostile file; no weights (a dry run
    reads none). Or a hostile path, or a directory without config.json."""
    shape = draw(st.sampled_from(["config", "config", "config", "whole", "none", "path"]))
    if shape == "path":
        return Doc({}, draw(paths() | text()))
    if shape == "none":
        return Doc({"cwd/hf": Directory()}, "{CWD}/hf")
    if shape == "whole":
        body = draw(WHOLE_JSON | st.binary(max_size=32))
    else:
        config = copy.deepcopy({**HF_CONFIG, **draw(st.sampled_from([{}, *HF_ODD]))})  # _mutated edits it
        body = _json(_mutated(draw, config, 2))
    arg = draw(st.sampled_from(["{CWD}/hf", "hf", "./hf/"]))
    return Doc({"cwd/hf/config.json": body}, arg)


# --- data prepare --chat: model directory and conversations ------------------------------------------


@functools.cache
def chat_model_files() -> dict[str, str]:
    """tokenizer.json and tokenizer_config.json of the tests' tiny chat model (tests/hftiny.py)."""
    import hftiny

    with tempfile.TemporaryDirectory(prefix="cordee-fuzz-tok-") as tmp:
        hftiny.write_tokenizer(Path(tmp))
        return {name: Path(tmp, name).read_text() for name in ("tokenizer.json", "tokenizer_config.json")}


TEMPLATES = [
    "{{ raise_exception('no') }}", "{% for m in messages %}", "{{ messages[99] }}", "{{ x.y.z }}",
    "{{ ''.__class__.__mro__ }}", "{% for i in range(10**9) %}{% endfor %}", "{{ 'a' * 10**10 }}",
    "{% for m in messages %}{{ m['content'] }}{% endfor %}",  # no roles: assistant text not told apart
    "{{ messages | tojson }}", "{% generation %}x{% endgeneration %}", "",
]  # fmt: skip


@st.composite
def chat_model_dirs(draw) -> Doc:
    """--model-dir: the tiny chat model with tokenizer_config.json broken in fields or whole, a
    hostile chat template (a chat_template.jinja beside it or in the config), or parts missing;
    or a hostile path."""
    shape = draw(st.sampled_from(["good", "config", "config", "template", "whole", "missing", "path"]))
    if shape == "path":
        return Doc({}, draw(paths() | text()))
    files = {f"cwd/model/{k}": v for k, v in chat_model_files().items()}
    if shape == "config":
        config = _mutated(draw, json.loads(files["cwd/model/tokenizer_config.json"]), 2)
        files["cwd/model/tokenizer_config.json"] = _json(config)
    elif shape == "template":
        template = draw(st.sampled_from(TEMPLATES) | text())
        if draw(st.booleans()):
            files["cwd/model/chat_template.jinja"] = template
        else:
            config = {**json.loads(files["cwd/model/tokenizer_config.json"]), "chat_template": template}
            files["cwd/model/tokenizer_config.json"] = _json(config)
    elif shape == "whole":
        name = draw(st.sampled_from(["tokenizer_config.json", "tokenizer.json", "chat_template.jinja"]))
        files[f"cwd/model/{name}"] = draw(WHOLE_JSON | st.sampled_from([Fifo(), Directory(), b"\xff\xfe"]))
    elif shape == "missing":
        del files[f"cwd/model/{draw(st.sampled_from(['tokenizer.json', 'tokenizer_config.json']))}"]
    return Doc(files, draw(st.sampled_from(["model", "{CWD}/model/"])))


GOOD_MESSAGES = [{"role": "system", "content": "w0 w1"}, {"role": "user", "content": "w2 w3"},
                 {"role": "assistant", "content": "w3 w2"}]  # fmt: skip
MESSAGE_LINES = st.one_of(
    st.just(_json({"messages": GOOD_MESSAGES})),
    st.builds(lambda m: _json({"messages": m}), st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]) | text(),
         "content": st.sampled_from(["w1 w2", "", " ", "<|eot_id|>", "w1 " * 300]) | text() | NODES}),
        max_size=4)),
    st.builds(lambda m: _json(m), NODES),
    TEXT_JSON,
    text(),
)  # fmt: skip


@st.composite
def chat_inputs(draw) -> Doc:
    """INPUT of `data prepare --chat`: JSONL conversations, good ones with hostile ones among them;
    or a hostile path."""
    if draw(st.integers(0, 5)) == 0:
        return Doc({}, draw(paths() | text() | st.sampled_from(NASTY_TEXT)))
    lines = draw(st.lists(MESSAGE_LINES, min_size=1, max_size=5))
    return Doc({"cwd/chat.jsonl": "\n".join(lines) + "\n"}, "chat.jsonl")


def chat_overrides():
    """Values of --seq-len for a chat run: small good ones, and hostile ones."""
    return st.sampled_from(["8", "16", "64"]) | values()


@functools.cache
def chat_data_files() -> dict[str, bytes]:
    """index.json and shard of a small `data prepare --chat` output, made once by the real command."""
    import sys

    cordee = str(Path(sys.executable).with_name("cordee"))
    with tempfile.TemporaryDirectory(prefix="cordee-fuzz-chat-") as tmp:
        for name, text in chat_model_files().items():
            Path(tmp, "model").mkdir(exist_ok=True)
            Path(tmp, "model", name).write_text(text)
        Path(tmp, "c.jsonl").write_text("\n".join([_json({"messages": GOOD_MESSAGES})] * 4) + "\n")
        argv = [cordee, "data", "prepare", "--chat", "c.jsonl", "--model-dir", "model", "--seq-len", "32",
                "--packing", "pad", "-o", "out", "--quiet"]  # fmt: skip
        subprocess.run(argv, cwd=tmp, check=True, capture_output=True, timeout=60)
        return {p.name: p.read_bytes() for p in Path(tmp, "out").iterdir()}


@st.composite
def chat_data(draw) -> Doc:
    """data.path of chat data (cordee.chat/1): index.json broken in fields or whole, the shard cut
    short, with bytes flipped or replaced by a FIFO, a directory, a link out."""
    files = dict(chat_data_files())
    shard = next(name for name in files if name != "index.json")
    change = draw(st.sampled_from(["index", "index", "whole", "cut", "flip", "odd"]))
    if change == "index":
        files["index.json"] = _json(_mutated(draw, json.loads(files["index.json"]), 3)).encode()
    elif change == "whole":
        files["index.json"] = draw(WHOLE_JSON)
    elif change == "cut":
        files[shard] = files[shard][: draw(st.integers(0, len(files[shard]) - 1))]
    elif change == "flip":
        at = draw(st.integers(0, len(files[shard]) - 1))
        files[shard] = (
            files[shard][:at] + bytes([files[shard][at] ^ draw(st.integers(1, 255))]) + files[shard][at + 1 :]
        )
    else:
        files[shard] = draw(
            st.sampled_from([Fifo(), Directory(), Symlink("{SENTINEL}/victim.txt"), Symlink("/dev/zero")])
        )
    return Doc({f"cwd/chat/{name}": data for name, data in files.items()}, "{CWD}/chat")
