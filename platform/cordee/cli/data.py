"""`cordee data prepare INPUT... -o DIR`: text or JSONL files -> token shards for `cordee train`
(cordee.train.prepare); progress on stderr, a summary (or --json) on stdout."""

from __future__ import annotations

import json
import sys
import time

import click

from cordee.cli.options import Number, json_option, verb_group
from cordee.errors import shown
from cordee.numbers import byte_size

SCHEMA = "cordee.data.prepare/1"


@verb_group("data", "Token shards, chat data for `cordee train`; squashfs dataset images.")
def command() -> None:
    pass


class Progress:
    """Progress lines on stderr, "LABEL: TEXT": at most every 0.5 s on a terminal (one line
    redrawn), every 5 s into a log file (a batch job's output). Called with bytes read of the
    total and tokens (`cordee data prepare`); other commands pass their own text to `show`."""

    def __init__(self, stream=None, label: str = "prepare") -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 5.0
        self.start = self.last = time.monotonic()

    def due(self, final: bool = False) -> bool:
        """Whether a line would be shown now: callers skip building its text otherwise."""
        return final or time.monotonic() - self.last >= self.interval

    def show(self, text: str, final: bool = False) -> None:
        if not self.due(final):
            return
        self.last = time.monotonic()
        line = f"{self.label}: {text}"
        # on a terminal the line is redrawn in place: clear what a longer one before left
        self.stream.write(("\r" if self.tty else "") + line + ("\x1b[K" if self.tty else ""))
        self.stream.write("\n" if final or not self.tty else "")
        self.stream.flush()

    def __call__(self, done: int, total: int, tokens: int, final: bool = False) -> None:
        if not self.due(final):
            return
        rate = done / max(time.monotonic() - self.start, 1e-9)
        percent = 100.0 * done / total if total else 100.0
        done_of = f"{byte_size(done)} / {byte_size(total)} ({percent:.0f}%)"
        self.show(f"{done_of}, {byte_size(rate)}/s, {tokens} tokens", final)


@command.command(
    "prepare",
    short_help="Tokenize text, JSONL or chat files into token shards.",
    help="Tokenize INPUT files into shards of at most --shard-tokens tokens in DIR, with an "
    "index.json (schema cordee.data/1). Formats: text (a file is one document), lines (a line is "
    "one document, blank lines skipped), jsonl (the --key string of each record; blank lines "
    "skipped); auto = jsonl for *.jsonl / *.ndjson, text otherwise. The built-in tokenizer is "
    "bytes (ids 0..255, EOS 256 after each document, vocabulary 257); --tokenizer uses a "
    "tokenizer.json through the tokenizers library. With --chat, INPUT files are JSONL "
    'conversations ({"messages": [{"role": ..., "content": ...}, ...]} per line) rendered with '
    "the chat template and tokenizer of --model-dir into rows of --seq-len + 1 tokens with a loss "
    "mask (only the assistant's tokens count; index.json schema cordee.chat/1): --packing pack "
    "puts several whole conversations in a row (attention stays inside each), pad one per row. "
    "DIR appears complete or not at all.",
)
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.option("-o", "--output", required=True, metavar="DIR", help="Output directory (new or empty).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "text", "lines", "jsonl"]),
    default="auto",
    show_default=True,
)
@click.option("--key", default="text", show_default=True, help="JSONL: the key holding the document.")
@click.option("--tokenizer", metavar="FILE", help="A tokenizer.json (tokenizers library); default: bytes.")
@click.option("--eos-token", metavar="TEXT", help="With --tokenizer: the end-of-document token.")
@click.option(
    "--shard-tokens",
    type=Number(int, 1, 1 << 40),
    default=64 << 20,
    show_default=True,
    help="Most tokens per shard.",
)
@click.option(
    "--chat", is_flag=True, help="INPUT files are JSONL conversations (needs --model-dir, --seq-len)."
)
@click.option(
    "--model-dir", metavar="DIR", help="With --chat: the model directory (tokenizer.json, chat template)."
)
@click.option(
    "--seq-len", type=Number(int, 1, 1 << 24), help="With --chat: the training seq_len (rows hold one more)."
)
@click.option(
    "--packing",
    type=click.Choice(["pack", "pad"]),
    help="With --chat: several conversations per row (pack, the default) or one per row (pad).",
)
@click.option("--overwrite", is_flag=True, help="Replace DIR if it holds an earlier output (its index.json).")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option(SCHEMA)
def prepare_command(
    inputs, output, fmt, key, tokenizer, eos_token, shard_tokens, chat, model_dir, seq_len, packing,
    overwrite, quiet, as_json,
) -> int:  # fmt: skip
    from cordee.errors import InputError

    chat_options = {"--model-dir": model_dir, "--seq-len": seq_len, "--packing": packing}
    if not chat:
        given = [name for name, value in chat_options.items() if value is not None]
        if given:
            raise InputError(f"{given[0]} needs --chat")
    else:
        given = [n for n, v in (("--tokenizer", tokenizer), ("--eos-token", eos_token)) if v is not None]
        given += [n for n, v, d in (("--format", fmt, "auto"), ("--key", key, "text")) if v != d]
        if given:
            raise InputError(f"{given[0]} does not apply to --chat (the model directory gives the tokenizer)")
        missing = [name for name in ("--model-dir", "--seq-len") if chat_options[name] is None]
        if missing:
            raise InputError(f"--chat needs {' and '.join(missing)}")
        return _prepare_chat(inputs, output, model_dir, seq_len, packing or "pack", shard_tokens, overwrite,
                             quiet, as_json)  # fmt: skip
    from cordee.train.prepare import prepare

    start = time.monotonic()
    progress = None if quiet else Progress()
    index = prepare(
        list(inputs),
        output,
        fmt=fmt,
        key=key,
        tokenizer=tokenizer,
        eos_token=eos_token,
        shard_tokens=shard_tokens,
        overwrite=overwrite,
        progress=progress,
    )
    seconds = time.monotonic() - start
    total = sum(s["bytes"] for s in index["sources"])
    if progress:
        progress(total, total, index["tokens"], final=True)
    summary = {
        "schema": SCHEMA,
        "output": output,
        "shards": len(index["shards"]),
        "tokens": index["tokens"],
        "documents": index["documents"],
        "vocab_size": index["vocab_size"],
        "tokenizer": index["tokenizer"]["kind"],
        "bytes": total,
        "seconds": round(seconds, 3),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        name = output if output.isprintable() else shown(output)
        sys.stdout.write(
            f"{name}: {summary['shards']} shard(s), {summary['tokens']} tokens, "
            f"{summary['documents']} documents, vocabulary {summary['vocab_size']} ({seconds:.1f} s)\n"
        )
    return 0


def _prepare_chat(
    inputs, output, model_dir, seq_len, packing, shard_tokens, overwrite, quiet, as_json
) -> int:
    from cordee.train.chatprep import prepare_chat

    start = time.monotonic()
    progress = None if quiet else Progress()
    index = prepare_chat(
        list(inputs), output, model_dir=model_dir, seq_len=seq_len, packing=packing,
        shard_tokens=shard_tokens, overwrite=overwrite, progress=progress,
    )  # fmt: skip
    seconds = time.monotonic() - start
    total = sum(s["bytes"] for s in index["sources"])
    if progress:
        progress(total, total, index["tokens"], final=True)
    rows, row_len = index["rows"], index["row_len"]
    summary = {
        "schema": SCHEMA, "output": output, "kind": "chat", "shards": len(index["shards"]),
        "rows": rows, "seq_len": seq_len, "packing": packing, "conversations": index["conversations"],
        "dropped_too_long": index["dropped_too_long"], "tokens": index["tokens"],
        "target_tokens": index["target_tokens"], "fill": round(index["tokens"] / (rows * row_len), 4),
        "vocab_size": index["vocab_size"], "bytes": total, "seconds": round(seconds, 3),
    }  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        name = output if output.isprintable() else shown(output)
        dropped = index["dropped_too_long"]
        sys.stdout.write(
            f"{name}: {rows} rows of {row_len} tokens ({packing}, {100 * summary['fill']:.0f}% filled), "
            f"{summary['conversations']} conversations"
            + (f", {dropped} longer than a row dropped" if dropped else "")
            + f", {summary['target_tokens']} target tokens ({seconds:.1f} s)\n"
        )
    return 0


# `data pack` and `data verify` live in their own module; imported last (it uses Progress above)
from cordee.cli.datapack import pack_command, verify_command  # noqa: E402

command.add_command(pack_command)
command.add_command(verify_command)
