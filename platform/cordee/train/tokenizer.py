"""The tokenizers of `cordee data prepare`: UTF-8 bytes (ByteTokenizer) or a tokenizer.json
through the `tokenizers` library (FileTokenizer). Both turn a stream of document pieces into
arrays of token ids with an end-of-document token after each document, batching short pieces and
cutting long documents, so memory stays bounded whatever the documents' lengths. Kept apart from
the input reading and shard writing of cordee.train.prepare; cordee.train.chat shares the guards
that turn the library's errors and Rust panics into one line. numpy and tokenizers are imported
inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator

from cordee.errors import InputError, shown

BATCH_BYTES = 1 << 20  # pieces are encoded in batches of this many bytes; a longer document in pieces


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, EOS 256 after each document. Pieces are batched so that a
    million one-line documents cost a few numpy calls, not a million."""

    vocab_size, eos = 257, 256

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, bool]] = []
        self.pending_bytes = 0

    def feed(self, data: bytes, end: bool) -> list:
        self.pending.append((data, end))
        self.pending_bytes += len(data) + 1
        return self._take(final=False) if self.pending_bytes >= BATCH_BYTES else []

    def flush(self) -> list:
        """The tokens of everything fed so far."""
        return self._take(final=True)

    def _take(self, final: bool) -> list:
        pieces, self.pending, self.pending_bytes = self.pending, [], 0
        tokens = self._encode(pieces, final)
        return [tokens] if len(tokens) else []

    def _encode(self, pieces: list[tuple[bytes, bool]], final: bool):
        import numpy as np

        if not pieces:
            return np.zeros(0, dtype=np.uint32)
        tokens = np.frombuffer(b"".join(data for data, _ in pieces), dtype=np.uint8).astype(np.uint32)
        ends = np.cumsum([len(data) for data, _ in pieces])[[end for _, end in pieces]]
        return np.insert(tokens, ends, self.eos)

    def describe(self) -> dict:
        return {"kind": "bytes", "eos": self.eos}


EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")
MAX_TOKENIZER_BYTES = 256 << 20


def load_tokenizer_json(path: str, option: str):
    """(tokenizers.Tokenizer, its vocabulary with added tokens, the file's bytes) of a
    tokenizer.json; InputError (one line naming the file) when the library is missing (`option`
    names what needs it), the file is unreadable, not a tokenizer, or has an empty vocabulary."""
    from cordee.fileio import read_bounded

    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError(
            f"{option} needs the tokenizers package (pip install 'cordee[tokenizers]')"
        ) from None
    raw = read_bounded(path, MAX_TOKENIZER_BYTES)
    try:
        with _no_panic_message():
            tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
        vocab = tokenizer.get_vocab(with_added_tokens=True)
    except BaseException as e:
        if not _library_error(e):
            raise
        raise InputError(f"{shown(path)}: not a tokenizers tokenizer.json ({_first_line(e)})") from None
    if not vocab:
        raise InputError(f"{shown(path)}: the tokenizer's vocabulary is empty")
    return tokenizer, vocab, raw


class FileTokenizer(ByteTokenizer):
    """A tokenizer.json through the `tokenizers` library. A document is encoded whole, unless it
    is longer than BATCH_BYTES: then in pieces cut at line ends (BPE pre-tokenizers split there
    anyway), or at a UTF-8 character boundary for a line longer than 4 pieces."""

    def __init__(self, path: str, eos_token: str | None) -> None:
        super().__init__()
        self.tokenizer, vocab, raw = load_tokenizer_json(path, "--tokenizer")
        ids = vocab.values()
        self.path, self.sha256 = os.path.abspath(path), hashlib.sha256(raw).hexdigest()
        # ids need not be dense: the shards' dtype and the model's rows must hold the largest one
        self.vocab_size = max(ids) + 1
        names = (eos_token,) if eos_token is not None else EOS_CANDIDATES
        found = [
            (n, self.tokenizer.token_to_id(n)) for n in names if self.tokenizer.token_to_id(n) is not None
        ]
        if not found:
            raise InputError(
                f"{shown(path)}: no end-of-document token {shown(eos_token) if eos_token else EOS_CANDIDATES}"
                " in its vocabulary (name one with --eos-token)"
            )
        self.eos_token, self.eos = found[0]
        self.carry = b""  # the unfinished end of a long document

    def _encode(self, pieces: list[tuple[bytes, bool]], final: bool):
        import numpy as np

        texts, current = [], self.carry
        for data, end in pieces:
            current += data
            if end:
                texts.append((current, True))
                current = b""
        cut = len(current) if final else current.rfind(b"\n") + 1
        if not cut and len(current) > 4 * BATCH_BYTES:
            cut = len(current)
            for back in range(1, min(4, len(current)) + 1):  # a UTF-8 character has at most 4 bytes
                if current[-back] >= 0xC0:  # its first byte: the character may be incomplete
                    cut = len(current) - back
                    break
                if current[-back] < 0x80:
                    break
        if cut:
            texts.append((current[:cut], False))
        self.carry = current[cut:]
        try:
            with _no_panic_message():
                encoded = self.tokenizer.encode_batch(
                    [data.decode("utf-8", "replace") for data, _ in texts], add_special_tokens=False
                )
        except BaseException as e:  # e.g. a WordLevel model whose unk_token is not in its vocabulary
            if not _library_error(e):
                raise
            raise InputError(f"{shown(self.path)}: the tokenizer failed: {_first_line(e)}") from None
        ids = [
            np.asarray(e.ids + ([self.eos] if end else []), dtype=np.uint32)
            for e, (_, end) in zip(encoded, texts, strict=True)
        ]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint32)

    def describe(self) -> dict:
        return {
            "kind": "tokenizers",
            "path": self.path,
            "sha256": self.sha256,
            "eos": self.eos,
            "eos_token": self.eos_token,
        }


def _library_error(e: BaseException) -> bool:
    """An error of the tokenizers library: its own Exception types, or a Rust panic on a malformed
    file (pyo3's PanicException derives from BaseException, so `except Exception` misses it)."""
    return isinstance(e, Exception) or type(e).__name__ == "PanicException"


@contextlib.contextmanager
def _no_panic_message() -> Iterator[None]:
    """File descriptor 2 on /dev/null: a Rust panic prints its own lines there before it reaches
    Python as an exception, which then becomes cordee's one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0][:100] if lines else type(e).__name__


def open_tokenizer(path: str | None, eos_token: str | None) -> ByteTokenizer:
    if path is None:
        if eos_token is not None:
            raise InputError("--eos-token needs --tokenizer (the byte tokenizer's EOS is 256)")
        return ByteTokenizer()
    return FileTokenizer(path, eos_token)
