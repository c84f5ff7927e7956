"""`cordee data prepare --chat`: JSONL conversations -> chat shards (cordee.train.chatdata's
format) with an index.json, streamed line by line; the output appears complete or not at all (a
temporary directory beside it, renamed into place)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

from cordee.errors import InputError, shown
from cordee.train.chatdata import CHAT_SCHEMA, PACKINGS, ChatShardWriter, Packer
from cordee.train.data import INDEX_NAME, INDEX_SCHEMA, dtype_for


def _conversations(path: str, counter: dict):
    """(messages, "file:line") of each record of a JSONL file; bytes and sha256 into `counter`."""
    from cordee.train.prepare import MAX_LINE_BYTES, _open_input

    with _open_input(path) as f:
        for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            counter["bytes"] += len(line)
            counter["sha"].update(line)
            where = f"{shown(path)}:{number}"
            if len(line) > MAX_LINE_BYTES:
                raise InputError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError as e:
                raise InputError(f"{where}: not JSON ({str(e).splitlines()[0][:80]})") from None
            except RecursionError:
                raise InputError(f"{where}: not JSON cordee can read (nested too deeply)") from None
            if not isinstance(record, dict) or "messages" not in record:
                raise InputError(f"{where}: no key 'messages'")
            yield record["messages"], where


def prepare_chat(
    inputs: list[str],
    output: str,
    *,
    model_dir: str,
    seq_len: int,
    packing: str = "pack",
    shard_tokens: int = 64 << 20,
    overwrite: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict:
    """JSONL conversations (`{"messages": [{"role", "content"}, ...]}` per line) -> chat shards in
    `output` (all or nothing); returns the index written there."""
    from cordee.train.chat import ChatTemplate
    from cordee.train.prepare import _open_input, staged_output

    if packing not in PACKINGS:
        raise InputError(f"--packing {shown(packing)}: one of {', '.join(PACKINGS)}")
    if not 1 <= seq_len <= 1 << 24:
        raise InputError(f"--seq-len {seq_len}: must be in 1..{1 << 24}")
    if not inputs:
        raise InputError("no input files")
    sizes = []
    for path in inputs:  # every input checked before any work
        with _open_input(path) as f:
            sizes.append(os.fstat(f.fileno()).st_size)
    template = ChatTemplate(model_dir)
    with staged_output(output, overwrite, schemas=(CHAT_SCHEMA, INDEX_SCHEMA)) as work:
        index = _write(inputs, sum(sizes), template, work, seq_len, packing, shard_tokens, progress)
    return index


def _write(inputs, total, template, work, seq_len, packing, shard_tokens, progress) -> dict:
    row_len = seq_len + 1
    writer = ChatShardWriter(work, dtype_for(template.vocab_size), row_len, max(1, shard_tokens // row_len))
    counts = {"conversations": 0, "dropped": 0, "longest_dropped": 0, "tokens": 0, "targets": 0}
    packer = Packer(row_len, template.pad_id, packing, writer.write)
    report = progress or (lambda done, total, tokens: None)
    sources, done = [], 0
    try:
        for path in inputs:
            counter = {"bytes": 0, "sha": hashlib.sha256(), "conversations": 0}
            for messages, where in _conversations(path, counter):
                encoded = template.encode(messages, where)
                if len(encoded.ids) > row_len:
                    counts["dropped"] += 1
                    counts["longest_dropped"] = max(counts["longest_dropped"], len(encoded.ids))
                else:
                    packer.add(encoded.ids, encoded.counts)
                    counts["conversations"] += 1
                    counter["conversations"] += 1
                    counts["tokens"] += len(encoded.ids)
                    counts["targets"] += sum(encoded.counts)
                report(done + counter["bytes"], total, counts["tokens"])
            done += counter["bytes"]
            sha = counter["sha"].hexdigest()
            sources.append(
                {"path": os.path.abspath(path), "bytes": counter["bytes"], "sha256": sha,
                 "conversations": counter["conversations"]}
            )  # fmt: skip
        packer.close()
        shards = writer.close()
    finally:
        if writer.file is not None:
            writer.file.close()
    if not counts["conversations"]:
        names = ", ".join(shown(p) for p in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
        if counts["dropped"]:
            raise InputError(
                f"{names}: every conversation is longer than seq_len + 1 = {row_len} tokens (the longest "
                f"has {counts['longest_dropped']}); use a larger --seq-len"
            )
        raise InputError(f"no conversation in {names}: nothing to prepare")
    report(done, total, counts["tokens"])
    rows = sum(s["rows"] for s in shards)
    index = {
        "schema": CHAT_SCHEMA, "seq_len": seq_len, "row_len": row_len, "packing": packing,
        "tokenizer": template.describe(), "vocab_size": template.vocab_size, "dtype": writer.dtype,
        "rows": rows, "conversations": counts["conversations"], "dropped_too_long": counts["dropped"],
        "longest_dropped": counts["longest_dropped"], "tokens": counts["tokens"],
        "target_tokens": counts["targets"], "pad_tokens": rows * row_len - counts["tokens"],
        "shards": shards, "sources": sources,
    }  # fmt: skip
    with open(os.path.join(work, INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    os.chmod(work, 0o755)  # mkdtemp made it 0700
    return index
