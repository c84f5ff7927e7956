"""`cordee export CHECKPOINT OUT_DIR`: a training checkpoint -> a Hugging Face model directory
(cordee.train.export); progress on stderr, a summary (or --json) on stdout."""

from __future__ import annotations

import json
import sys
import time

import click

from cordee.cli import VERBS
from cordee.cli.data import Progress
from cordee.cli.options import json_option
from cordee.errors import shown
from cordee.numbers import byte_size

SCHEMA = "cordee.export/1"

HELP = (
    "Write OUT_DIR as a Hugging Face model directory that transformers loads "
    "(AutoModelForCausalLM.from_pretrained): safetensors shards (with model.safetensors.index.json "
    "when there are several), config.json, and the tokenizer files and generation_config.json of the "
    "model the run started from (model.from_hf), copied. CHECKPOINT is a step-N directory or a "
    "checkpoint root (the step its `latest` names), saved at any world size; it is read in this one "
    "process, model tensors only, one output shard at a time. OUT_DIR appears complete or not at all."
)


def progress_line():
    """(bytes written, bytes in all) -> a progress line on stderr, as `data prepare` shows its own."""
    bar = Progress(label="export")

    def show(done: int, total: int) -> None:
        final = done >= total
        if bar.due(final):
            percent = 100.0 * done / total if total else 100.0
            rate = byte_size(done / max(time.monotonic() - bar.start, 1e-9))
            bar.show(f"{byte_size(done)} / {byte_size(total)} ({percent:.0f}%), {rate}/s", final)

    return show


@click.command("export", help=HELP, short_help=VERBS["export"].help)
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.argument("out", metavar="OUT_DIR")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default="auto",
    show_default=True,
    help="Tensor type written; auto: the source model's (its config.json) if bf16 or fp32, else fp32.",
)
@click.option(
    "--max-shard-size",
    "max_shard",
    default="5GB",
    show_default=True,
    metavar="SIZE",
    help="Largest safetensors file (5GB = 10^9 bytes x 5, 2GiB = 2^30 x 2); a larger tensor gets its own.",
)
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists (a directory).")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option(SCHEMA)
def command(
    checkpoint: str, out: str, dtype: str, max_shard: str, force: bool, quiet: bool, as_json: bool
) -> int:
    from cordee.train.export import export, parse_size

    progress = None if quiet else progress_line()
    summary = export(
        checkpoint,
        out,
        dtype=dtype,
        max_shard_size=parse_size(max_shard),
        force=force,
        progress=progress,
        log=lambda line: print(f"cordee export: warning: {line}", file=sys.stderr, flush=True),
    )
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        name = summary["output"] if summary["output"].isprintable() else shown(summary["output"])
        shards = sum(1 for f in summary["files"] if f.endswith(".safetensors"))
        copied = ", ".join(summary["copied"]) or "none"
        sys.stdout.write(
            f"{name}: step {summary['step']} (saved by {summary['world_size']} rank(s)), "
            f"{summary['tensors']} tensors, {byte_size(summary['bytes'])} {summary['dtype']} in {shards} "
            f"file(s); copied: {copied} "
            f"({summary['seconds']:.1f} s)\n"
        )
    return 0
