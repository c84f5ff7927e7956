"""`cordee data prepare`: text or JSONL files -> token shards (cordee.train.data's format) and an
index.json, streamed (inputs are read in 1 MiB pieces or line by line, never whole) through a
tokenizer of cordee.train.tokenizer.

The whole output is written in a temporary directory beside the target and renamed into place at
the end: a reader never sees half a data set, and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator

from cordee.errors import CordeeError, InputError, shown
from cordee.fileio import read_bounded
from cordee.train.data import (
    HEADER_SIZE,
    INDEX_NAME,
    INDEX_SCHEMA,
    SHARD_SUFFIX,
    dtype_for,
    pack_header,
)
from cordee.train.tokenizer import ByteTokenizer, open_tokenizer

PIECE_BYTES = 1 << 20  # read size of text documents
# Training memory-maps every shard: stay well below Linux's default vm.max_map_count (65530), and
# below 100000, where shard-NNNNN names would stop sorting in write order.
MAX_SHARDS = 1 << 15
MAX_LINE_BYTES = 64 << 20  # one JSONL record or one line document
FORMATS = ("auto", "text", "lines", "jsonl")
DEFAULT_SHARD_TOKENS = 64 << 20


def _open_input(path: str):
    """A regular file opened for binary reading, or InputError (a FIFO would block for ever)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as e:
        raise InputError(f"{shown(path)}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{shown(path)}: not a regular file (pass the files of a directory, e.g. dir/*.txt)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class Source:
    """One input file read once: its pieces, byte count and sha256 as they go by."""

    def __init__(self, path: str, fmt: str, key: str) -> None:
        self.path, self.key = path, key
        self.format = fmt if fmt != "auto" else ("jsonl" if path.endswith((".jsonl", ".ndjson")) else "text")
        with _open_input(path) as f:
            self.size = os.fstat(f.fileno()).st_size
        self.done, self.documents, self.sha256 = 0, 0, hashlib.sha256()

    def pieces(self) -> Iterator[tuple[bytes, bool]]:
        """(bytes of a document, whether the document ends there)."""
        try:
            yield from self._pieces()
        except OSError as e:  # a read error of the input (EIO), not of the output's file system
            raise InputError(f"{shown(self.path)}: cannot read: {e.strerror or e}") from None

    def _pieces(self) -> Iterator[tuple[bytes, bool]]:
        with _open_input(self.path) as f:
            if self.format == "text":
                while chunk := f.read(PIECE_BYTES):
                    self._count(chunk)
                    yield chunk, False
                if self.done:  # an empty document (here, an empty file) adds nothing
                    self.documents += 1
                    yield b"", True
                return
            for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                self._count(line)
                if len(line) > MAX_LINE_BYTES:
                    raise InputError(f"{shown(self.path)}:{number}: line longer than {MAX_LINE_BYTES} bytes")
                document = self._document(line, number)
                if document:
                    self.documents += 1
                    yield document, True

    def _document(self, line: bytes, number: int) -> bytes:
        """A line's document; b"" (skipped) for a blank line or an empty document."""
        if self.format == "lines":
            return line.rstrip(b"\r\n")
        if not line.strip():
            return b""
        where = f"{shown(self.path)}:{number}"
        try:  # decoded here: json.loads(bytes) would also guess UTF-16 and UTF-32
            record = json.loads(line.decode("utf-8"))
        except ValueError as e:  # also UnicodeDecodeError
            raise InputError(f"{where}: not JSON ({str(e).splitlines()[0][:80]})") from None
        except RecursionError:  # json nests by recursion: "[[[[..." exhausts the stack
            raise InputError(f"{where}: not JSON cordee can read (nested too deeply)") from None
        if not isinstance(record, dict) or self.key not in record:
            raise InputError(f"{where}: no key {self.key!r}")
        if not isinstance(record[self.key], str):
            raise InputError(f"{where}: {self.key!r} is {type(record[self.key]).__name__}, not a string")
        return record[self.key].encode("utf-8", "surrogatepass")

    def _count(self, data: bytes) -> None:
        self.done += len(data)
        self.sha256.update(data)

    def record(self) -> dict:
        return {
            "path": os.path.abspath(self.path),
            "format": self.format,
            "bytes": self.size,
            "sha256": self.sha256.hexdigest(),
            "documents": self.documents,
        }


class ShardWriter:
    """Tokens streamed into shard-NNNNN.tok files of at most `limit` tokens each (in the temporary
    output directory); a shard's header is filled in when it is complete."""

    def __init__(self, directory: str, dtype: str, limit: int) -> None:
        import numpy as np

        self.directory, self.dtype, self.limit = directory, np.dtype(dtype).newbyteorder("<"), limit
        self.eos: int | None = None
        self.shards: list[dict] = []
        self.file = None

    def write(self, tokens) -> None:
        while len(tokens):
            if self.file is None:
                self._start()
            take = tokens[: self.limit - self.count]
            self.file.write(take.astype(self.dtype).tobytes())
            self.count += len(take)
            self.max_token = max(self.max_token, int(take.max()))
            self.documents += int((take == self.eos).sum()) if self.eos is not None else 0
            tokens = tokens[len(take) :]
            if self.count == self.limit:
                self._finish()

    def close(self) -> list[dict]:
        if self.file is not None:
            self._finish()
        return self.shards

    def _start(self) -> None:
        if len(self.shards) >= MAX_SHARDS:
            raise InputError(too_many_shards(self.limit))
        self.name = f"shard-{len(self.shards):05d}{SHARD_SUFFIX}"
        self.file = open(os.path.join(self.directory, self.name), "wb")  # noqa: SIM115 (closed in _finish)
        self.file.write(bytes(HEADER_SIZE))
        self.count = self.max_token = self.documents = 0

    def _finish(self) -> None:
        self.file.seek(0)
        self.file.write(pack_header(self.dtype.name, self.count, self.documents, self.max_token))
        self.file.close()
        self.file = None
        self.shards.append({"name": self.name, "tokens": self.count, "documents": self.documents})


def too_many_shards(shard_tokens: int) -> str:
    return (
        f"--shard-tokens {shard_tokens}: the data needs more than {MAX_SHARDS} shards of that size; "
        "choose a larger --shard-tokens (training maps every shard into memory)"
    )


def _check_output(output: str, overwrite: bool, schemas: tuple[str, ...] = (INDEX_SCHEMA,)) -> bool:
    """Whether `output` exists and is to be replaced. Only an empty directory, or with
    `overwrite` a former output (it has a cordee index.json of one of `schemas`), may be replaced."""
    if not os.path.lexists(output):
        return False
    if not os.path.isdir(output) or os.path.islink(output):
        raise InputError(f"output {shown(output)} exists and is not a directory")
    entries = os.listdir(output)
    if not entries:
        return True
    if not overwrite:
        raise InputError(f"output {shown(output)} is not empty (--overwrite replaces an earlier output)")
    try:  # read_bounded: an index.json that is a FIFO must not block
        is_ours = json.loads(read_bounded(os.path.join(output, INDEX_NAME))).get("schema") in schemas
    except (InputError, ValueError, AttributeError, RecursionError):
        is_ours = False
    if not is_ours:
        raise InputError(
            f"output {shown(output)} holds no {' or '.join(schemas)} {INDEX_NAME}; not replacing it"
        )
    return True


def prepare(
    inputs: list[str],
    output: str,
    *,
    fmt: str = "auto",
    key: str = "text",
    tokenizer: str | None = None,
    eos_token: str | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """Tokenize `inputs` into shards in `output`; returns the index written there. `progress`
    (bytes read, bytes in all, tokens so far) is called after every piece read, and once at the end."""
    if fmt not in FORMATS:
        raise InputError(f"format {shown(fmt)}: one of {', '.join(FORMATS)}")
    if shard_tokens < 1:
        raise InputError(f"shard tokens {shard_tokens}: must be >= 1")
    if not inputs:
        raise InputError("no input files")
    sources = [Source(path, fmt, key) for path in inputs]  # every input checked before any work
    tok = open_tokenizer(tokenizer, eos_token)
    if type(tok) is ByteTokenizer:  # a text file of n > 0 bytes is exactly n + 1 byte tokens
        known = sum(s.size + 1 for s in sources if s.format == "text" and s.size)
        if -(-known // shard_tokens) > MAX_SHARDS:
            raise InputError(too_many_shards(shard_tokens))
    with staged_output(output, overwrite) as work:
        index = _write(sources, tok, ShardWriter(work, dtype_for(tok.vocab_size), shard_tokens), progress)
    return index


@contextlib.contextmanager
def staged_output(output: str, overwrite: bool, schemas: tuple[str, ...] = (INDEX_SCHEMA,)) -> Iterator[str]:
    """A new directory beside `output` to write into; when the block ends without an error it
    becomes `output` (replacing an earlier output that _check_output allows), otherwise it is
    removed: the output appears complete or not at all. Errors of the output's file system (no
    room, no permission, read-only) become one line naming the path."""
    if not output or "\0" in output:
        raise InputError(f"output {shown(output)}: not a directory name")
    output = os.path.abspath(output)
    work = None
    try:
        replace = _check_output(output, overwrite, schemas)
        try:
            os.makedirs(os.path.dirname(output), exist_ok=True)
        except RecursionError:  # os.makedirs recurses once per missing directory
            raise InputError(f"output {shown(output)}: too many directories to create") from None
        work = tempfile.mkdtemp(
            prefix=f".{os.path.basename(output)}.", suffix=".tmp", dir=os.path.dirname(output)
        )
        yield work
        _move_into_place(work, output, replace)
    except OSError as e:
        where = shown(e.filename) if e.filename else shown(output)
        raise CordeeError(f"output {shown(output)}: {where}: {e.strerror or e}") from None
    finally:
        if work and os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)


def _write(sources: list[Source], tok: ByteTokenizer, writer: ShardWriter, progress) -> dict:
    """Every source through the tokenizer into shards; index.json last. Returns the index."""
    report = progress or (lambda done, total, tokens: None)
    total, tokens, done = sum(s.size for s in sources), 0, 0
    writer.eos = tok.eos
    try:
        for source in sources:
            for data, end in source.pieces():
                for array in tok.feed(data, end):
                    writer.write(array)
                    tokens += len(array)
                report(done + source.done, total, tokens)
            done += source.done
        for array in tok.flush():
            writer.write(array)
            tokens += len(array)
        if not tokens:  # training refuses a directory without shards: say so now, write nothing
            names = ", ".join(shown(s.path) for s in sources[:3])
            raise InputError(
                f"no document in {names}{' ...' if len(sources) > 3 else ''}: nothing to prepare"
            )
        shards = writer.close()
    finally:
        if writer.file is not None:
            writer.file.close()
    report(done, total, tokens)
    index = {
        "schema": INDEX_SCHEMA,
        "tokenizer": tok.describe(),
        "vocab_size": tok.vocab_size,
        "dtype": writer.dtype.name,
        "tokens": tokens,
        "documents": sum(s.documents for s in sources),
        "shard_tokens": writer.limit,
        "shards": shards,
        "sources": [s.record() for s in sources],
    }
    with open(os.path.join(writer.directory, INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    os.chmod(writer.directory, 0o755)  # mkdtemp made it 0700
    return index


def _move_into_place(work: str, output: str, replace: bool) -> None:
    """rename(2) onto `output`; a non-empty one is first renamed aside, then removed."""
    old = None
    if replace and os.listdir(output):
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(output)}.", suffix=".old", dir=os.path.dirname(output)
        )
        os.replace(output, old)  # onto the empty directory mkdtemp made
    os.replace(work, output)
    if old:
        shutil.rmtree(old, ignore_errors=True)
