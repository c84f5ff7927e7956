"""Training data: the token shard format, and the shard and synthetic sources that read samples.

A shard (`*.tok`) is a 64-byte little-endian header and the tokens (the layout is in DATA.md):
magic b"CORDTOK\\0", u32 version, u32 dtype code (1 = uint16, 2 = uint32), u64 token count,
u64 document count, u64 largest token id, 24 reserved bytes (zero). A directory of shards is one
token stream: its `*.tok` files in name order, memory-mapped, never copied.

Samples are windows of seq_len + 1 tokens with a stride of seq_len (sample i starts at token
i * seq_len), so each token but the first is a target exactly once per epoch. Which samples a step
reads, and each rank's rows of them, is cordee.train.order's. numpy is imported inside functions
(`cordee --help` stays instant).
"""

from __future__ import annotations

import bisect
import os
import stat
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cordee.errors import InputError, one_line, shown
from cordee.train.order import MASK64, mix64

if TYPE_CHECKING:
    import numpy as np

SHARD_MAGIC = b"CORDTOK\x00"
SHARD_VERSION = 1
SHARD_SUFFIX = ".tok"
HEADER = struct.Struct("<8sIIQQQ24x")  # magic, version, dtype code, tokens, documents, max token
HEADER_SIZE = HEADER.size  # 64: keeps the tokens aligned for any dtype
DTYPES = {1: "uint16", 2: "uint32"}  # code -> numpy dtype name (little-endian on disk)
INDEX_NAME = "index.json"
INDEX_SCHEMA = "cordee.data/1"
SCAN_ALL_TOKENS = 1 << 28  # at open, sources up to this many tokens are checked token by token
SCAN_EDGE_TOKENS = 1 << 20  # larger ones: the first and last this many of each shard, then every batch


@dataclass(frozen=True)
class ShardHeader:
    path: str
    dtype: str  # "uint16" | "uint32"
    tokens: int
    documents: int
    max_token: int


def dtype_for(vocab_size: int) -> str:
    """The smallest shard dtype that holds token ids below vocab_size."""
    if not 1 <= vocab_size <= 1 << 32:
        raise InputError(f"vocabulary size {vocab_size}: shards hold 1..{1 << 32} token ids")
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def pack_header(dtype: str, tokens: int, documents: int, max_token: int) -> bytes:
    code = next(c for c, name in DTYPES.items() if name == dtype)
    return HEADER.pack(SHARD_MAGIC, SHARD_VERSION, code, tokens, documents, max_token)


def write_shard(path: str | os.PathLike, tokens, *, documents: int = 0, dtype: str | None = None) -> None:
    """Write `tokens` (ids >= 0) as one shard, atomically (a temporary file, then a rename)."""
    import numpy as np

    from cordee.fileio import write_atomic

    array = np.asarray(tokens).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= 1 << 32):
        raise InputError(f"{shown(os.fspath(path))}: token ids must be in 0..{(1 << 32) - 1}")
    max_token = int(array.max()) if array.size else 0
    dtype = dtype or dtype_for(max_token + 1)
    if max_token > np.iinfo(dtype).max:
        raise InputError(f"{shown(os.fspath(path))}: token id {max_token} does not fit {dtype}")
    body = array.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    write_atomic(path, pack_header(dtype, array.size, documents, max_token) + body)


def read_header(path: str | os.PathLike) -> ShardHeader:
    """The validated header of a shard; InputError (one line naming the file) for anything else."""
    path = os.fspath(path)
    name = shown(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO would block open()
        with open(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise InputError(f"{name}: not a regular file, cannot be a token shard")
            raw, size = f.read(HEADER_SIZE), os.fstat(fd).st_size
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise InputError(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if len(raw) < HEADER_SIZE:
        raise InputError(
            f"{name}: not a cordee token shard ({size} bytes, the header alone is {HEADER_SIZE})"
        )
    magic, version, code, tokens, documents, max_token = HEADER.unpack(raw)
    if magic != SHARD_MAGIC:
        raise InputError(f"{name}: not a cordee token shard (magic {magic!r}, expected {SHARD_MAGIC!r})")
    if version != SHARD_VERSION:
        raise InputError(f"{name}: token shard version {version}, this cordee reads version {SHARD_VERSION}")
    if code not in DTYPES:
        raise InputError(f"{name}: token shard dtype code {code} is unknown (1 = uint16, 2 = uint32)")
    itemsize = 2 if code == 1 else 4
    if size != HEADER_SIZE + tokens * itemsize:
        raise InputError(
            f"{name}: truncated or damaged token shard: the header says {tokens} tokens "
            f"({HEADER_SIZE + tokens * itemsize} bytes), the file has {size} bytes"
        )
    if max_token >= 1 << (8 * itemsize) or (tokens == 0 and max_token):
        raise InputError(f"{name}: damaged token shard header: largest token {max_token} in {DTYPES[code]}")
    return ShardHeader(path, DTYPES[code], tokens, documents, max_token)


class TokenSource:
    """Samples of seq_len + 1 tokens by index. `vocab_size`: every token is below it (checked)."""

    vocab_size: int | None = None

    def num_samples(self, seq_len: int) -> int:
        raise NotImplementedError

    def sample(self, index: int, seq_len: int) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class ShardSource(TokenSource):
    """Shards memory-mapped and read as one stream, in the order given."""

    def __init__(self, headers: list[ShardHeader], vocab_size: int) -> None:
        import numpy as np

        self.headers = [h for h in headers if h.tokens]  # an empty file cannot be mapped
        self.vocab_size = vocab_size
        self.starts = [0]
        self.maps = []
        for h in self.headers:
            dtype = np.dtype(h.dtype).newbyteorder("<")
            self.maps.append(np.memmap(h.path, dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(h.tokens,)))
            self.starts.append(self.starts[-1] + h.tokens)
        self.total = self.starts[-1]

    def num_samples(self, seq_len: int) -> int:
        return max(0, (self.total - 1) // seq_len)

    def sample(self, index: int, seq_len: int) -> np.ndarray:
        import numpy as np

        begin, end = index * seq_len, index * seq_len + seq_len + 1
        if index < 0 or end > self.total:
            raise IndexError(f"sample {index} of seq_len {seq_len} is past the end of {self.total} tokens")
        pieces = []
        shard = bisect.bisect_right(self.starts, begin) - 1
        while begin < end:
            lo, hi = begin - self.starts[shard], min(end, self.starts[shard + 1]) - self.starts[shard]
            piece = self.maps[shard][lo:hi]
            if int(piece.max()) >= self.vocab_size:  # the check at open may not have seen every token
                self._too_large(shard, lo + int(piece.argmax()))
            pieces.append(piece)
            begin, shard = self.starts[shard] + hi, shard + 1
        return np.concatenate(pieces).astype(np.int64)

    def check_tokens(self) -> None:
        """Every token below vocab_size: the headers' largest ids, then the tokens themselves (all of
        them up to SCAN_ALL_TOKENS, beyond that the first and last SCAN_EDGE_TOKENS of each shard;
        `sample` checks what it reads, so a bad token further in stops the run at its batch)."""
        chunk = 1 << 24
        for shard, h in enumerate(self.headers):
            if h.max_token >= self.vocab_size:
                raise InputError(
                    f"{shown(h.path)}: token ids up to {h.max_token}, model.vocab_size is {self.vocab_size}"
                )
            edge = h.tokens if self.total <= SCAN_ALL_TOKENS else SCAN_EDGE_TOKENS
            spans = [(0, h.tokens)] if 2 * edge >= h.tokens else [(0, edge), (h.tokens - edge, h.tokens)]
            for lo, hi in spans:
                for at in range(lo, hi, chunk):
                    piece = self.maps[shard][at : min(hi, at + chunk)]
                    if int(piece.max()) > h.max_token:  # (and h.max_token < vocab_size)
                        self._too_large(shard, at + int(piece.argmax()))

    def _too_large(self, shard: int, offset: int) -> None:
        h, token = self.headers[shard], int(self.maps[shard][offset])
        if token < self.vocab_size:
            raise InputError(
                f"{shown(h.path)}: damaged token shard: token {token} at position {offset} is above "
                f"the header's largest id {h.max_token}"
            )
        raise InputError(
            f"{shown(h.path)}: token {token} at position {offset} is not below model.vocab_size "
            f"{self.vocab_size}"
        )

    def describe(self) -> str:
        return f"{len(self.headers)} shard(s), {self.total} tokens"


class SyntheticSource(TokenSource):
    """A learnable stream made from the seed: each sample follows one of FAMILIES affine rules
    x[t+1] = (a * x[t] + c) mod A over the first A tokens (A a power of two, at most 64), from a
    random start. a = 1 mod 4 and c odd give each rule a full cycle (Hull and Dobell, 1962), so a
    sample is a slice of that cycle: the sample's rule and its last token give the next token."""

    FAMILIES = 4
    ALPHABET_BITS = 6  # 64 tokens: a tiny model's loss falls from log(V) to ~1 within 60 steps
    SAMPLES = 1 << 40  # endless in practice; the order never builds anything this large

    def __init__(self, seed: int, vocab_size: int) -> None:
        import numpy as np

        if vocab_size < 2:
            raise InputError(f"synthetic data needs model.vocab_size >= 2, not {vocab_size}")
        self.seed, self.vocab_size = seed, vocab_size
        self.alphabet = 1 << min(self.ALPHABET_BITS, vocab_size.bit_length() - 1)
        rng = np.random.Generator(np.random.PCG64([seed & MASK64, 0x5EED]))
        a = 4 * rng.integers(0, max(1, self.alphabet // 4), self.FAMILIES) + 1
        c = 2 * rng.integers(0, max(1, self.alphabet // 2), self.FAMILIES) + 1
        self.rules = [(int(ai) % self.alphabet, int(ci) % self.alphabet) for ai, ci in zip(a, c, strict=True)]
        self.cycles = np.zeros((self.FAMILIES, self.alphabet), dtype=np.int64)
        for f, (ai, ci) in enumerate(self.rules):
            x = 0
            for t in range(self.alphabet):
                self.cycles[f, t], x = x, (ai * x + ci) % self.alphabet

    def num_samples(self, seq_len: int) -> int:
        return self.SAMPLES

    def sample(self, index: int, seq_len: int) -> np.ndarray:
        import numpy as np

        h = int(mix64(np.array([(self.seed * 0x9E3779B97F4A7C15 + index) & MASK64], dtype=np.uint64))[0])
        family, start = h % self.FAMILIES, (h >> 8) % self.alphabet
        return self.cycles[family, (start + np.arange(seq_len + 1)) % self.alphabet]

    def describe(self) -> str:
        return f"synthetic (seed {self.seed}, {self.FAMILIES} affine rules over {self.alphabet} tokens)"


def require_samples(source: TokenSource, seq_len: int) -> None:
    """InputError when the data holds no whole sample (seq_len + 1 tokens): training would stop at
    its first batch; the dry run and the trainer both say so before anything starts."""
    if source.num_samples(seq_len) < 1:
        raise InputError(f"data ({source.describe()}): fewer than seq_len + 1 = {seq_len + 1} tokens")


def open_source(cfg, vocab_size: int) -> TokenSource:
    """`cfg.path`: "synthetic", a shard file, a directory of `*.tok` shards (read in name order;
    its index.json, when there, must list the same shards), or a chat data set (`*.chat` shards:
    a ChatSource). InputError for a missing path, a bad shard, tokens >= vocab_size."""
    if cfg.path == "synthetic":
        return SyntheticSource(cfg.seed, vocab_size)
    path = os.path.expanduser(cfg.path)
    if os.path.isdir(path):
        from cordee.train.chatdata import ChatSource, is_chat_dir

        if is_chat_dir(path):  # `cordee data prepare --chat` output: rows with loss masks
            return ChatSource(path, vocab_size)
        names = sorted(n for n in os.listdir(path) if n.endswith(SHARD_SUFFIX))
        if not names:
            raise InputError(f"data.path {shown(cfg.path)}: no *{SHARD_SUFFIX} shards (cordee data prepare)")
        headers = [read_header(os.path.join(path, n)) for n in names]
        check_index(path, headers, vocab_size)
    elif os.path.exists(path):
        headers = [read_header(path)]
    else:
        raise InputError(f"data.path {shown(cfg.path)}: no such file or directory")
    source = ShardSource(headers, vocab_size)
    source.check_tokens()
    return source


def check_index(directory: str, headers: list[ShardHeader], vocab_size: int) -> None:
    """A directory's index.json (written by `cordee data prepare`; optional) must list exactly the
    shards there with their token counts, and a vocabulary no larger than the model's."""
    from cordee.fileio import read_json

    path = os.path.join(directory, INDEX_NAME)
    if not os.path.exists(path):
        return
    name = shown(path)
    index = read_json(path, f"{INDEX_SCHEMA} index")
    try:
        listed = {s["name"]: s["tokens"] for s in index["shards"]}
        data_vocab = index["vocab_size"]
    except (KeyError, TypeError) as e:
        raise InputError(
            f"{name}: not a {INDEX_SCHEMA} index ({type(e).__name__}: {one_line(str(e))})"
        ) from None
    if index.get("schema") != INDEX_SCHEMA:
        raise InputError(f"{name}: schema {shown(str(index.get('schema')))}, expected {INDEX_SCHEMA!r}")
    found = {os.path.basename(h.path): h.tokens for h in headers}
    if listed != found:
        missing, extra = sorted(set(listed) - set(found)), sorted(set(found) - set(listed))
        differ = sorted(n for n in set(listed) & set(found) if listed[n] != found[n])
        raise InputError(
            f"{name} does not match the shards beside it (missing: {missing[:3]}, not listed: "
            f"{extra[:3]}, other token counts: {differ[:3]})"
        )
    if isinstance(data_vocab, bool) or not isinstance(data_vocab, int) or data_vocab < 1:
        raise InputError(
            f"{name}: vocab_size {shown(str(data_vocab))} is not a vocabulary size (a whole number >= 1)"
        )
    if data_vocab > vocab_size:
        raise InputError(
            f"{name}: the tokenizer's vocabulary ({data_vocab}) is larger than model.vocab_size {vocab_size}"
        )
