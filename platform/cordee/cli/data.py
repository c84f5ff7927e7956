"""`cordee data prepare INPUT... -o DIR`: text or JSONL files -> token shards for `cordee train`
(cordee.train.prepare); progress on stderr, a summary (or --json) on stdout."""

from __future__ import annotations

import json
import sys
import time

import click

from cordee.cli.options import Number, json_option, verb_group
from cordee.errors import shown

SCHEMA = "cordee.data.prepare/1"


@verb_group("data", "Prepare token shards for `cordee train` from text or JSONL files.")
def command() -> None:
    pass


def size(count: float) -> str:
    """A byte count or rate for people: 36 B, 1.5 MiB."""
    units, i = ("B", "KiB", "MiB", "GiB", "TiB"), 0
    while count >= 1024 and i < len(units) - 1:
        count, i = count / 1024, i + 1
    return f"{count:.0f} B" if i == 0 else f"{count:.1f} {units[i]}"


class Progress:
    """Bytes read of the total and the rate on stderr: at most every 0.5 s on a terminal (one line
    redrawn), every 5 s into a log file (a batch job's output)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 5.0
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int, tokens: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        percent = 100.0 * done / total if total else 100.0
        line = f"prepare: {size(done)} / {size(total)} ({percent:.0f}%), {size(rate)}/s, {tokens} tokens"
        self.stream.write(("\r" if self.tty else "") + line + ("\n" if final or not self.tty else ""))
        self.stream.flush()


@command.command(
    "prepare",
    short_help="Tokenize text or JSONL files into token shards.",
    help="Tokenize INPUT files into shards of at most --shard-tokens tokens in DIR, with an "
    "index.json (schema cordee.data/1). Formats: text (a file is one document), lines (a line is "
    "one document, blank lines skipped), jsonl (the --key string of each record; blank lines "
    "skipped); auto = jsonl for *.jsonl / *.ndjson, text otherwise. The built-in tokenizer is "
    "bytes (ids 0..255, EOS 256 after each document, vocabulary 257); --tokenizer uses a "
    "tokenizer.json through the tokenizers library. DIR appears complete or not at all.",
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
@click.option("--overwrite", is_flag=True, help="Replace DIR if it holds an earlier output (its index.json).")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option(SCHEMA)
def prepare_command(
    inputs, output, fmt, key, tokenizer, eos_token, shard_tokens, overwrite, quiet, as_json
) -> int:
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
