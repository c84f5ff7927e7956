"""Chat data sets: rows of exactly seq_len + 1 tokens with a flag byte per token, the writer
behind `cordee data prepare --chat`, and ChatSource, which the trainer reads them through.

A shard (`*.chat`) is a 64-byte little-endian header (magic b"CORDCHAT", u32 version, u32 dtype
code as in token shards, u64 rows, u64 row length, u64 largest token id, u64 conversations, 16
reserved bytes), then the rows, each row_len tokens followed by row_len flag bytes (one read per
row). Flags: bit 0 TARGET (the token is a loss target), bit 1 START (a conversation starts
here), bit 2 PAD. The directory's index.json (schema cordee.chat/1) records seq_len and packing.

Packing (the default) fills rows with whole conversations, first fit over a few open rows, and
pads only a row's tail; `pad` puts one conversation in each row. A conversation longer than a
row is dropped (counted in the index): a cut conversation would teach answers without their end.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Callable

from cordee.errors import InputError, one_line, shown
from cordee.train.data import DTYPES, INDEX_NAME, TokenSource

CHAT_MAGIC = b"CORDCHAT"
CHAT_VERSION = 1
CHAT_SUFFIX = ".chat"
CHAT_SCHEMA = "cordee.chat/1"
HEADER = struct.Struct("<8sIIQQQQ16x")  # magic, version, dtype code, rows, row_len, max token, conversations
TARGET, START, PAD = 1, 2, 4
PACKINGS = ("pack", "pad")
OPEN_ROWS = 8  # rows kept open for first-fit packing: more fill little more, and cost per conversation


def row_dtype(dtype: str, row_len: int):
    import numpy as np

    return np.dtype([("tokens", np.dtype(dtype).newbyteorder("<"), (row_len,)), ("flags", "u1", (row_len,))])


class Packer:
    """Conversations (ids, counts) into rows of row_len tokens and flags, handed to `emit`."""

    def __init__(self, row_len: int, pad_id: int, packing: str, emit: Callable) -> None:
        self.row_len, self.pad_id, self.packing, self.emit = row_len, pad_id, packing, emit
        self.open: list[list[tuple[list[int], list[bool]]]] = []

    def add(self, ids: list[int], counts: list[bool]) -> None:
        if self.packing == "pad":
            self._emit([(ids, counts)])
            return
        for row in self.open:
            if self._used(row) + len(ids) <= self.row_len:
                row.append((ids, counts))
                if self._used(row) == self.row_len:
                    self.open.remove(row)
                    self._emit(row)
                return
        if len(self.open) == OPEN_ROWS:
            fullest = max(self.open, key=self._used)
            self.open.remove(fullest)
            self._emit(fullest)
        self.open.append([(ids, counts)])

    def close(self) -> None:
        for row in self.open:
            self._emit(row)
        self.open = []

    def _used(self, row) -> int:
        return sum(len(ids) for ids, _ in row)

    def _emit(self, row) -> None:
        import numpy as np

        tokens = np.full(self.row_len, self.pad_id, dtype=np.int64)
        flags = np.zeros(self.row_len, dtype=np.uint8)
        at = 0
        for ids, counts in row:
            tokens[at : at + len(ids)] = ids
            flags[at : at + len(ids)] = np.asarray(counts, dtype=np.uint8) * TARGET
            flags[at] |= START
            at += len(ids)
        flags[at:] = PAD
        self.emit(tokens, flags, len(row))


class ChatShardWriter:
    """Rows streamed into chat-NNNNN.chat files of at most `rows_per_shard` rows."""

    def __init__(self, directory: str, dtype: str, row_len: int, rows_per_shard: int) -> None:
        self.directory, self.dtype, self.row_len, self.limit = directory, dtype, row_len, rows_per_shard
        self.record = row_dtype(dtype, row_len)
        self.shards: list[dict] = []
        self.file = None

    def write(self, tokens, flags, conversations: int) -> None:
        import numpy as np

        if self.file is None:
            self.name = f"chat-{len(self.shards):05d}{CHAT_SUFFIX}"
            self.file = open(os.path.join(self.directory, self.name), "wb")  # noqa: SIM115 (closed in _finish)
            self.file.write(bytes(HEADER.size))
            self.rows = self.max_token = self.conversations = 0
        row = np.zeros(1, dtype=self.record)
        row["tokens"][0], row["flags"][0] = tokens, flags
        self.file.write(row.tobytes())
        self.rows += 1
        self.conversations += conversations
        self.max_token = max(self.max_token, int(tokens.max()))
        if self.rows == self.limit:
            self._finish()

    def close(self) -> list[dict]:
        if self.file is not None:
            self._finish()
        return self.shards

    def _finish(self) -> None:
        code = next(c for c, name in DTYPES.items() if name == self.dtype)
        self.file.seek(0)
        self.file.write(
            HEADER.pack(
                CHAT_MAGIC, CHAT_VERSION, code, self.rows, self.row_len, self.max_token, self.conversations
            )
        )
        self.file.close()
        self.file = None
        self.shards.append({"name": self.name, "rows": self.rows, "conversations": self.conversations})


def is_chat_dir(path: str) -> bool:
    return any(n.endswith(CHAT_SUFFIX) for n in os.listdir(path))


class ChatSource(TokenSource):
    """The rows of a chat data set; sample i is row i (seq_len must be the data set's)."""

    masked = True

    def __init__(self, directory: str, vocab_size: int) -> None:
        import numpy as np

        self.directory, self.vocab_size = directory, vocab_size
        index = _read_index(directory)
        self.seq_len, self.packing, row_len = index["seq_len"], index["packing"], index["row_len"]
        name = shown(os.path.join(directory, INDEX_NAME))
        if index["vocab_size"] > vocab_size:
            raise InputError(
                f"{name}: the tokenizer's vocabulary ({index['vocab_size']}) is larger than "
                f"model.vocab_size {vocab_size}"
            )
        found = sorted(n for n in os.listdir(directory) if n.endswith(CHAT_SUFFIX))
        listed = [s["name"] for s in index["shards"]]
        if found != sorted(listed):
            raise InputError(f"{name} does not list the *{CHAT_SUFFIX} shards beside it ({found[:3]} ...)")
        self.maps, self.starts = [], [0]
        for shard in index["shards"]:
            path = os.path.join(directory, shard["name"])
            dtype, rows = _read_header(path, row_len, vocab_size)
            if rows != shard["rows"]:
                raise InputError(f"{name}: {shard['name']} has {rows} rows, the index says {shard['rows']}")
            self.maps.append(
                np.memmap(path, dtype=row_dtype(dtype, row_len), mode="r", offset=HEADER.size, shape=(rows,))
            )
            self.starts.append(self.starts[-1] + rows)
        self.rows = self.starts[-1]

    def num_samples(self, seq_len: int) -> int:
        if seq_len != self.seq_len:
            raise InputError(
                f"data.path {shown(self.directory)} holds chat rows of seq_len {self.seq_len} (prepared "
                f"with --seq-len {self.seq_len}); the config's seq_len is {seq_len}"
            )
        return self.rows

    def row(self, index: int):
        """(tokens int64, flags uint8) of row `index`, each of seq_len + 1 values."""
        import bisect

        import numpy as np

        shard = bisect.bisect_right(self.starts, index) - 1
        if not 0 <= index < self.rows:
            raise IndexError(f"row {index} of {self.rows}")
        record = self.maps[shard][index - self.starts[shard]]
        tokens = np.asarray(record["tokens"], dtype=np.int64)
        if int(tokens.max()) >= self.vocab_size:
            raise InputError(
                f"{shown(self.maps[shard].filename)}: row {index - self.starts[shard]}: token "
                f"{int(tokens.max())} is not below model.vocab_size {self.vocab_size}"
            )
        return tokens, np.array(record["flags"])

    def sample(self, index: int, seq_len: int):
        self.num_samples(seq_len)
        return self.row(index)[0]

    def describe(self) -> str:
        how = "packed" if self.packing == "pack" else "padded"
        return f"chat rows ({self.rows} rows of {self.seq_len + 1} tokens, {how})"


def _read_index(directory: str) -> dict:
    from cordee.fileio import read_bounded

    path = os.path.join(directory, INDEX_NAME)
    name = shown(path)
    try:
        index = json.loads(read_bounded(path))
        fields = (index["seq_len"], index["row_len"], index["vocab_size"], index["rows"])
        shards = [(s["name"], s["rows"]) for s in index["shards"]]
        packing = index["packing"]
    except RecursionError:
        raise InputError(f"{name}: not a {CHAT_SCHEMA} index (nested too deeply)") from None
    except (ValueError, KeyError, TypeError) as e:  # InputError (unreadable) passes through
        raise InputError(
            f"{name}: not a {CHAT_SCHEMA} index ({type(e).__name__}: {one_line(str(e))})"
        ) from None
    if index.get("schema") != CHAT_SCHEMA:
        raise InputError(f"{name}: schema {shown(str(index.get('schema')))}, expected {CHAT_SCHEMA!r}")
    numbers = [*fields, *(rows for _, rows in shards)]
    if (
        any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in numbers)
        or packing not in PACKINGS
    ):
        raise InputError(f"{name}: damaged {CHAT_SCHEMA} index (seq_len, row_len, rows, packing)")
    if index["row_len"] != index["seq_len"] + 1 or not all(isinstance(n, str) for n, _ in shards):
        raise InputError(f"{name}: damaged {CHAT_SCHEMA} index (row_len is not seq_len + 1)")
    return index


def _read_header(path: str, row_len: int, vocab_size: int) -> tuple[str, int]:
    """(dtype, rows) of a chat shard whose header and size agree with the index's row_len."""
    name = shown(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputError(f"{name}: not a regular file, cannot be a chat shard")
            raw, size = f.read(HEADER.size), os.fstat(fd).st_size
    except (OSError, ValueError) as e:
        raise InputError(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if len(raw) < HEADER.size:
        raise InputError(f"{name}: not a cordee chat shard ({size} bytes, the header alone is {HEADER.size})")
    magic, version, code, rows, length, max_token, _ = HEADER.unpack(raw)
    if magic != CHAT_MAGIC:
        raise InputError(f"{name}: not a cordee chat shard (magic {magic!r}, expected {CHAT_MAGIC!r})")
    if version != CHAT_VERSION or code not in DTYPES:
        raise InputError(
            f"{name}: chat shard version {version} dtype {code}; this cordee reads version 1, dtype 1|2"
        )
    if length != row_len:
        raise InputError(f"{name}: rows of {length} tokens, the index says {row_len}")
    itemsize = 2 if code == 1 else 4
    if size != HEADER.size + rows * row_len * (itemsize + 1):
        raise InputError(
            f"{name}: truncated or damaged chat shard: {rows} rows of {row_len} need "
            f"{HEADER.size + rows * row_len * (itemsize + 1)} bytes, the file has {size}"
        )
    if max_token >= vocab_size:
        raise InputError(f"{name}: token ids up to {max_token}, model.vocab_size is {vocab_size}")
    return DTYPES[code], rows
