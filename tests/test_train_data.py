"""Token shards (format, damaged headers), shard and synthetic sources, and the global sample
order: a pure function of (seed, step) that covers every sample once per epoch and that every
world size reads the same way."""

from __future__ import annotations

import os
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from cordee.errors import InputError
from cordee.train import data
from cordee.train.data import (
    HEADER_SIZE,
    SyntheticSource,
    open_source,
    read_header,
    write_shard,
)
from cordee.train.order import rank_batch, step_indices


def cfg(path, seed=1234):
    return SimpleNamespace(path=str(path), seed=seed)


def make_shards(directory, arrays, **kw):
    directory.mkdir(exist_ok=True)
    for i, tokens in enumerate(arrays):
        write_shard(directory / f"part-{i:03d}.tok", tokens, **kw)
    return directory


# --- format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [255, 65535, 70000, (1 << 32) - 1])
def test_shard_round_trip_in_the_smallest_dtype(tmp_path, top):
    tokens = np.random.default_rng(top).integers(0, top + 1, 1000)
    tokens[17] = top
    write_shard(tmp_path / "a.tok", tokens, documents=3)
    header = read_header(tmp_path / "a.tok")
    assert (header.tokens, header.documents, header.max_token) == (1000, 3, top)
    assert header.dtype == ("uint16" if top < 1 << 16 else "uint32")
    raw = (tmp_path / "a.tok").read_bytes()
    assert raw[:8] == b"CORDTOK\x00" and len(raw) == HEADER_SIZE + 1000 * (2 if top < 1 << 16 else 4)
    on_disk = np.frombuffer(raw[HEADER_SIZE:], dtype="<u2" if top < 1 << 16 else "<u4")
    assert np.array_equal(on_disk, tokens)


def test_a_directory_is_one_stream_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 500, n) for n in (5, 0, 1, 40, 3)]  # an empty shard, a 1-token shard
    d = make_shards(tmp_path / "d", parts)
    source = open_source(cfg(d), 500)
    stream = np.concatenate(parts)
    seq = 4
    assert source.num_samples(seq) == (len(stream) - 1) // seq
    for i in range(source.num_samples(seq)):  # windows of seq + 1 with stride seq, across shard ends
        assert np.array_equal(source.sample(i, seq), stream[i * seq : i * seq + seq + 1])
    with pytest.raises(IndexError):
        source.sample(source.num_samples(seq), seq)


def header_bytes(magic=b"CORDTOK\x00", version=1, code=1, tokens=4, documents=0, max_token=9):
    return struct.pack("<8sIIQQQ24x", magic, version, code, tokens, documents, max_token)


BODY = np.array([1, 2, 9, 3], dtype="<u2").tobytes()
DAMAGED = {
    "short": (b"CORDTOK\x00\x01", "not a cordee token shard (9 bytes, the header alone is 64)"),
    "magic": (header_bytes(magic=b"GGUF\x00\x00\x00\x00") + BODY, "not a cordee token shard (magic b'GGUF"),
    "version": (header_bytes(version=2) + BODY, "token shard version 2, this cordee reads version 1"),
    "dtype": (header_bytes(code=7) + BODY, "dtype code 7 is unknown (1 = uint16, 2 = uint32)"),
    "truncated": (header_bytes() + BODY[:-1], "the header says 4 tokens (72 bytes), the file has 71 bytes"),
    "longer": (header_bytes() + BODY + b"\x00\x00", "the header says 4 tokens (72 bytes), the file has 74"),
    "max_token": (header_bytes(max_token=70000) + BODY, "damaged token shard header: largest token 70000"),
    "empty_max": (header_bytes(tokens=0, max_token=3), "damaged token shard header: largest token 3"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_each_damaged_header_is_one_line_naming_the_file(tmp_path, case):
    content, expected = DAMAGED[case]
    path = tmp_path / "bad.tok"
    path.write_bytes(content)
    for opener in (lambda: read_header(path), lambda: open_source(cfg(tmp_path), 100)):
        with pytest.raises(InputError) as e:
            opener()
        message = str(e.value)
        assert expected in message and str(path) in message and "\n" not in message


def test_bad_paths(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        open_source(cfg(tmp_path / "nowhere"), 100)
    with pytest.raises(InputError, match=r"no \*\.tok shards"):
        open_source(cfg(tmp_path), 100)
    os.mkfifo(tmp_path / "pipe.tok")  # opening a FIFO for reading would block for ever
    with pytest.raises(InputError, match="not a regular file"):
        open_source(cfg(tmp_path), 100)


def test_tokens_beyond_the_model_vocabulary(tmp_path):
    d = make_shards(tmp_path / "d", [np.arange(50), np.arange(300)])
    with pytest.raises(InputError, match=r"part-001.tok': token ids up to 299, model.vocab_size is 256"):
        open_source(cfg(d), 256)
    assert open_source(cfg(d), 300).num_samples(10) == 34


def test_a_header_that_understates_its_tokens_is_caught(tmp_path, monkeypatch):
    path = tmp_path / "d" / "a.tok"
    make_shards(tmp_path / "d", [np.zeros(0)])
    tokens = np.arange(100) % 10
    tokens[77] = 400  # the header claims 9 as the largest
    path.write_bytes(header_bytes(tokens=100, max_token=9) + tokens.astype("<u2").tobytes())
    with pytest.raises(
        InputError, match=r"a.tok': token 400 at position 77 is not below model.vocab_size 256"
    ):
        open_source(cfg(path), 256)
    # Too large to scan at open: the first and last edge tokens are checked, then every sample read
    monkeypatch.setattr(data, "SCAN_ALL_TOKENS", 50)
    monkeypatch.setattr(data, "SCAN_EDGE_TOKENS", 10)
    source = open_source(cfg(path), 256)
    assert source.sample(0, 10)[-1] == 0
    with pytest.raises(InputError, match="token 400 at position 77"):
        source.sample(7, 10)
    tokens[77] = 200  # below the vocabulary but above the header's claim: the header is wrong
    path.write_bytes(header_bytes(tokens=100, max_token=9) + tokens.astype("<u2").tobytes())
    monkeypatch.setattr(data, "SCAN_ALL_TOKENS", 1000)
    with pytest.raises(
        InputError, match="damaged token shard: token 200 at position 77 is above the header's"
    ):
        open_source(cfg(path), 256)


def test_index_json_must_match_the_shards(tmp_path):
    d = make_shards(tmp_path / "d", [np.arange(20), np.arange(30)])
    index = {"schema": "cordee.data/1", "vocab_size": 257, "shards": [{"name": "part-000.tok", "tokens": 20}]}
    (d / "index.json").write_text(__import__("json").dumps(index))
    with pytest.raises(
        InputError, match=r"does not match the shards beside it .*not listed: \['part-001.tok'\]"
    ):
        open_source(cfg(d), 300)
    index["shards"].append({"name": "part-001.tok", "tokens": 30})
    (d / "index.json").write_text(__import__("json").dumps(index))
    assert open_source(cfg(d), 300).total == 50
    with pytest.raises(InputError, match=r"vocabulary \(257\) is larger than model.vocab_size 256"):
        open_source(cfg(d), 256)
    (d / "index.json").write_text("{")
    with pytest.raises(InputError, match="index.json': cordee.data/1 index is not JSON"):
        open_source(cfg(d), 300)


# --- order ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n,batch", [(1, 1), (1, 3), (2, 2), (7, 3), (100, 8), (1000, 64), (4097, 100)])
def test_each_epoch_sees_every_sample_once(n, batch):
    steps = -(-3 * n // batch)  # three epochs, batches straddling epoch ends
    order = [i for s in range(steps) for i in step_indices(42, s, batch, n)]
    epochs = [order[e * n : (e + 1) * n] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    if n >= 100:  # shuffled, and differently each epoch
        assert epochs[0] != list(range(n)) and epochs[0] != epochs[1]


def test_the_order_is_a_pure_function_of_seed_and_step():
    assert step_indices(1, 5, 16, 10**6) == step_indices(1, 5, 16, 10**6)
    assert step_indices(1, 5, 16, 10**6) != step_indices(2, 5, 16, 10**6)
    assert step_indices(1, 5, 16, 10**6) != step_indices(1, 6, 16, 10**6)
    # step s of batch b is positions [s*b, (s+1)*b): two steps of 8 are one of 16
    assert step_indices(9, 0, 16, 1000) == step_indices(9, 0, 8, 1000) + step_indices(9, 1, 8, 1000)


@pytest.mark.parametrize("n", [10**8, 1 << 40, (1 << 62) + 1, (1 << 63) + 5])
def test_huge_sample_counts_need_no_table(n):
    indices = step_indices(3, 10**6, 4096, n)
    assert len(set(indices)) == 4096 and all(0 <= i < n for i in indices)


def test_every_world_size_reads_the_same_samples_in_the_same_order(tmp_path):
    d = make_shards(tmp_path / "d", [np.random.default_rng(1).integers(0, 1000, 5000)])
    for source in (open_source(cfg(d), 1000), open_source(cfg("synthetic"), 1000)):
        for step in (0, 1, 57):
            per_world = {}
            for world in (1, 2, 4):
                parts = [rank_batch(source, 7, step, 8, 16, rank, world) for rank in range(world)]
                assert all(x.shape == (8 // world, 16) for x, _ in parts)
                per_world[world] = (
                    np.concatenate([x for x, _ in parts]),
                    np.concatenate([y for _, y in parts]),
                )
            inputs, targets = per_world[1]
            expected = [source.sample(i, 16) for i in step_indices(7, step, 8, source.num_samples(16))]
            assert np.array_equal(inputs, [s[:-1] for s in expected])
            assert np.array_equal(targets, [s[1:] for s in expected])
            for world in (2, 4):
                assert np.array_equal(per_world[world][0], inputs) and np.array_equal(
                    per_world[world][1], targets
                )


def test_batch_errors(tmp_path):
    source = open_source(cfg("synthetic"), 100)
    x, y = rank_batch(source, 1, 0, 6, 8, 1, 3)
    assert x.dtype == y.dtype and str(x.dtype) == "torch.int64"
    with pytest.raises(InputError, match="global_batch 6 is not divisible by the world size 4"):
        rank_batch(source, 1, 0, 6, 8, 0, 4)
    d = make_shards(tmp_path / "d", [np.arange(8)])
    with pytest.raises(InputError, match=r"fewer than seq_len \+ 1 = 9 tokens"):
        rank_batch(open_source(cfg(d), 100), 1, 0, 2, 8, 0, 1)


# --- synthetic ------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [2, 3, 64, 257, 50000])
def test_synthetic_samples_follow_one_rule_each(vocab):
    source = SyntheticSource(5, vocab)
    alphabet = source.alphabet
    assert alphabet <= vocab and alphabet == min(64, 1 << (vocab.bit_length() - 1))
    families = set()
    for index in range(200):
        s = source.sample(index, 40)
        assert s.shape == (41,) and 0 <= s.min() and s.max() < alphabet
        # learnable: one affine rule explains every step, so each next token follows from the last
        fits = [
            f for f, (a, c) in enumerate(source.rules) if np.array_equal(s[1:], (a * s[:-1] + c) % alphabet)
        ]
        assert fits
        families.add(fits[0])
    assert len(families) > 1 or alphabet < 8
    assert np.array_equal(source.sample(3, 40), SyntheticSource(5, vocab).sample(3, 40))  # from the seed
    if vocab >= 64:
        assert not np.array_equal(source.sample(3, 40), SyntheticSource(6, vocab).sample(3, 40))
