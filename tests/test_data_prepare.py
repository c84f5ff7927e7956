"""`cordee data prepare`: text, line and JSONL inputs -> shards that decode back to the documents,
a tokenizers tokenizer.json built here, bad inputs as one line, the output all or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cordee.errors import InputError
from cordee.train import prepare as prep
from cordee.train import tokenizer
from cordee.train.data import open_source, read_header
from cordee.train.prepare import prepare

CORDEE = str(Path(sys.executable).with_name("cordee"))
EOS = 256


def stream(directory) -> np.ndarray:
    """Every token of a prepared directory, read back through the trainer's source."""
    source = open_source(SimpleNamespace(path=str(directory), seed=0), 1 << 20)
    return np.concatenate([m for m in source.maps]) if source.maps else np.zeros(0, dtype=np.int64)


def documents(tokens) -> list[bytes]:
    """Byte-tokenizer output split at EOS (the last token is always EOS)."""
    assert tokens[-1] == EOS
    ends = np.flatnonzero(tokens == EOS)
    return [bytes(tokens[a + 1 : b].astype(np.uint8)) for a, b in zip([-1, *ends[:-1]], ends, strict=True)]


def test_text_lines_and_jsonl_round_trip(tmp_path):
    binary = bytes(range(256)) * 3 + "é\n".encode()  # text mode: any bytes are just bytes
    (tmp_path / "a.txt").write_bytes(binary)
    (tmp_path / "b.jsonl").write_text(
        '{"text": "héllo"}\n\n{"text": "", "x": 1}\n{"body": "no", "text": "w"}\n'
    )
    (tmp_path / "c.txt").write_bytes(b"one\r\n\ntwo\nthree")
    (tmp_path / "empty.txt").write_bytes(b"")  # empty documents are skipped
    out = tmp_path / "out"
    index = prepare(
        [str(tmp_path / n) for n in ("a.txt", "b.jsonl", "empty.txt", "c.txt")],
        str(out),
        shard_tokens=100,
        fmt="auto",
    )
    tokens = stream(out)
    assert documents(tokens) == [binary, "héllo".encode(), b"w", b"one\r\n\ntwo\nthree"]
    assert index["tokens"] == len(tokens) and index["documents"] == 4 and index["vocab_size"] == 257
    assert [s["tokens"] for s in index["shards"]] == [100] * (len(tokens) // 100) + [len(tokens) % 100]
    assert sum(s["documents"] for s in index["shards"]) == 4
    for shard in index["shards"]:
        header = read_header(out / shard["name"])
        assert (header.tokens, header.documents, header.dtype) == (
            shard["tokens"],
            shard["documents"],
            "uint16",
        )
    for source, name in zip(index["sources"], ("a.txt", "b.jsonl", "empty.txt", "c.txt"), strict=True):
        raw = (tmp_path / name).read_bytes()
        assert source["sha256"] == hashlib.sha256(raw).hexdigest() and source["bytes"] == len(raw)
    assert json.loads((out / "index.json").read_text()) == index
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left

    lines = prepare([str(tmp_path / "c.txt")], str(tmp_path / "lines"), fmt="lines")
    assert documents(stream(tmp_path / "lines")) == [b"one", b"two", b"three"] and lines["documents"] == 3


def test_long_documents_are_streamed_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "PIECE_BYTES", 7)  # many pieces and batches on a small input
    monkeypatch.setattr(tokenizer, "BATCH_BYTES", 7)
    text = os.urandom(1000) + b"\n" + b"line\n" * 50
    (tmp_path / "big.txt").write_bytes(text)
    (tmp_path / "l.txt").write_bytes(b"a\nbb\n\nccc\n" * 20)
    prepare([str(tmp_path / "big.txt"), str(tmp_path / "l.txt")], str(tmp_path / "o"), fmt="text")
    assert documents(stream(tmp_path / "o")) == [text, b"a\nbb\n\nccc\n" * 20]


def make_tokenizer(path, eos="</s>"):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "the", "cat", "sat", "on", "mat", "é", "."] + ([eos] if eos else [])
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if eos:
        tok.add_special_tokens([eos])
    tok.save(str(path))
    return tok


def test_a_tokenizers_tokenizer_json(tmp_path, monkeypatch):
    tok = make_tokenizer(tmp_path / "tokenizer.json")
    docs = ["the cat sat on the mat .", "é dog\nthe cat " * 40 + "sat"]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"t": d}) + "\n" for d in docs))
    (tmp_path / "long.txt").write_text(docs[1])
    monkeypatch.setattr(prep, "PIECE_BYTES", 64)  # the long document is cut at line ends
    monkeypatch.setattr(tokenizer, "BATCH_BYTES", 64)
    index = prepare(
        [str(tmp_path / "d.jsonl"), str(tmp_path / "long.txt")],
        str(tmp_path / "o"),
        key="t",
        tokenizer=str(tmp_path / "tokenizer.json"),
    )
    eos = tok.token_to_id("</s>")
    expected = [i for d in [*docs, docs[1]] for i in [*tok.encode(d, add_special_tokens=False).ids, eos]]
    assert stream(tmp_path / "o").tolist() == expected
    assert index["vocab_size"] == 9 and index["tokenizer"]["eos"] == eos == 8
    assert (
        index["tokenizer"]["sha256"] == hashlib.sha256((tmp_path / "tokenizer.json").read_bytes()).hexdigest()
    )
    with pytest.raises(InputError, match=r"vocabulary \(9\) is larger than model.vocab_size 8"):
        open_source(SimpleNamespace(path=str(tmp_path / "o"), seed=0), 8)

    # a line longer than 4 pieces is cut, but never inside a character (no U+FFFD, so no [UNK])
    monkeypatch.setattr(prep, "PIECE_BYTES", 8)
    monkeypatch.setattr(tokenizer, "BATCH_BYTES", 8)
    (tmp_path / "one-line.txt").write_text("é " * 150 + "the")
    prepare([str(tmp_path / "one-line.txt")], str(tmp_path / "u"), tokenizer=str(tmp_path / "tokenizer.json"))
    assert stream(tmp_path / "u").tolist() == [6] * 150 + [1, eos]


def test_tokenizer_problems(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("the cat")
    make_tokenizer(tmp_path / "no-eos.json", eos=None)
    (tmp_path / "bad.json").write_text('{"version": "1.0", "model": 3}')

    def fails(match, **kw):
        with pytest.raises(InputError, match=match):
            prepare([str(tmp_path / "a.txt")], str(tmp_path / "o"), **kw)
        assert not (tmp_path / "o").exists()

    fails(
        r"no-eos.json': no end-of-document token .* \(name one with --eos-token\)",
        tokenizer=str(tmp_path / "no-eos.json"),
    )
    assert prepare(
        [str(tmp_path / "a.txt")],
        str(tmp_path / "x"),
        tokenizer=str(tmp_path / "no-eos.json"),
        eos_token="cat",
    )
    fails(r"bad.json': not a tokenizers tokenizer.json", tokenizer=str(tmp_path / "bad.json"))
    fails(r"missing.json': cannot read", tokenizer=str(tmp_path / "missing.json"))
    fails(r"--eos-token needs --tokenizer", eos_token="</s>")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the package were not installed
    fails(r"--tokenizer needs the tokenizers package", tokenizer=str(tmp_path / "no-eos.json"))


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"text": "a"}\n{"text": "b",\n', r"bad.jsonl':2: not JSON \("),
        (b'{"text": "a"}\n\n[1, 2]\n', r"bad.jsonl':3: no key 'text'"),
        (b'{"txt": "a"}\n', r"bad.jsonl':1: no key 'text'"),
        (b'{"text": 5}\n', r"bad.jsonl':1: 'text' is int, not a string"),
        (b'{"text": "\xff"}\n', r"bad.jsonl':1: not JSON"),
    ],
)
def test_bad_jsonl_names_file_and_line_and_leaves_nothing(tmp_path, content, message):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=message) as e:
        prepare([str(tmp_path / "good.txt"), str(tmp_path / "bad.jsonl")], str(tmp_path / "o"))
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.txt"]


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    for path, message in [
        (tmp_path / "missing.txt", "missing.txt': cannot read: No such file or directory"),
        (tmp_path, "not a regular file"),
        (tmp_path / "fifo", "not a regular file"),
    ]:
        with pytest.raises(InputError, match=message):
            prepare([str(tmp_path / "a.txt"), str(path)], str(tmp_path / "o"))
    with pytest.raises(InputError, match="format 'csv'"):
        prepare([str(tmp_path / "a.txt")], str(tmp_path / "o"), fmt="csv")
    assert not (tmp_path / "o").exists()


def test_output_is_replaced_only_when_it_is_an_earlier_output(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.txt").write_text("second one")
    out = tmp_path / "o"
    out.mkdir()  # an empty directory is fine
    prepare([str(tmp_path / "a.txt")], str(out))
    with pytest.raises(InputError, match="is not empty"):
        prepare([str(tmp_path / "b.txt")], str(out))
    prepare([str(tmp_path / "b.txt")], str(out), overwrite=True)
    assert documents(stream(out)) == [b"second one"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="holds no cordee.data/1 index.json; not replacing it"):
        prepare([str(tmp_path / "a.txt")], str(other), overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"
    with pytest.raises(InputError, match="exists and is not a directory"):
        prepare([str(tmp_path / "a.txt")], str(tmp_path / "a.txt"))


def cordee(*args, timeout=60):
    return subprocess.run([CORDEE, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_json_summary_progress_and_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n')
    r = cordee(
        "data",
        "prepare",
        str(tmp_path / "a.jsonl"),
        "-o",
        str(tmp_path / "o"),
        "--shard-tokens",
        "5",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["schema"] == "cordee.data.prepare/1"
    assert (summary["shards"], summary["tokens"], summary["documents"], summary["vocab_size"]) == (
        3,
        12,
        2,
        257,
    )
    assert "prepare: 36 B / 36 B (100%)" in r.stderr and "12 tokens" in r.stderr
    r = cordee("data", "prepare", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "p"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope.txt': cannot read" in r.stderr
    r = cordee("data", "prepare", str(tmp_path / "a.jsonl"), "-o", str(tmp_path / "p"), "--shard-tokens", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--shard-tokens" in r.stderr
    r = cordee("data", "prepare", str(tmp_path / "a.jsonl"), "-o", "/proc/cordee-data")  # cannot be written
    assert (
        r.returncode == 2
        and r.stderr.count("\n") == 1
        and r.stderr.startswith("cordee: error: output '/proc/")
    )
    r = cordee("data", "prepare", str(tmp_path / "a.jsonl"), "-o", str(tmp_path / "a\nb"), "--quiet")
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stderr == ""  # the name cannot forge a line
