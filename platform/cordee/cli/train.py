"""`cordee train --config FILE|NAME [KEY=VALUE ...]`: the reference trainer (cordee.train.loop).

Run it in every rank: `srun ... cordee launch -- cordee train --config 1b`. The config is
validated (keys, sizes, the world size, the data) before any process group forms; `--dry-run`
stops there and prints the resolved config. `--help` lists every config key from the config's
own docs, without importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import click

from cordee.cli import VERBS

CONFIG_SCHEMA = "cordee.train.config/1"
SUMMARY_SCHEMA = "cordee.train/1"

HELP = (
    "Train the reference decoder-only transformer with FSDP2 on every rank this command runs in "
    "(start it under `cordee launch`). --config names a TOML file or a shipped config (tiny, 125m, "
    "1b, 8b); KEY=VALUE overrides its keys (dotted for tables: model.n_layers=4, checkpoint.dir=/x). "
    "The run resumes from the newest complete checkpoint in checkpoint.dir. Exit 0 when all steps "
    "are done; 75 when a stop signal (stop_signals) ended it after a complete checkpoint: run it "
    "again to resume; 2 for a bad config or a failed rank (the line names the rank and its node)."
)


class TrainCommand(click.Command):
    """--help ends with the table of config keys (type, default, meaning)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from cordee.train.config import key_docs
        from cordee.train.configload import shipped_configs

        rows = [(key, f"{kind}, default {default}: {doc}") for key, kind, default, doc in key_docs()]
        with formatter.section("Config keys (in the TOML file or as KEY=VALUE)"):
            formatter.write_dl(rows)
        with formatter.section("Shipped configs"):
            formatter.write_text(", ".join(shipped_configs()))


@click.command("train", cls=TrainCommand, help=HELP, short_help=VERBS["train"].help)
@click.option("--config", "source", required=True, metavar="FILE|NAME", help="TOML file or shipped config.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--dry-run", is_flag=True, help="Validate, print the resolved config as JSON, start nothing.")
@click.option("--json", "as_json", is_flag=True, help=f"Print a summary as JSON (schema {SUMMARY_SCHEMA}).")
def command(source: str, overrides: tuple[str, ...], dry_run: bool, as_json: bool) -> int:
    from cordee.train.config import check_world, config_hash, grad_accum_steps
    from cordee.train.configload import load_config
    from cordee.train.data import open_source, require_samples
    from cordee.train.parallel import read_ranks

    cfg = load_config(source, list(overrides))
    ranks = read_ranks(os.environ)
    check_world(cfg, ranks.world_size)
    if dry_run:
        data = open_source(cfg.data, cfg.model.vocab_size)  # the same checks training makes
        require_samples(data, cfg.seq_len)
        doc = {
            "schema": CONFIG_SCHEMA,
            "config": dataclasses.asdict(cfg),
            "config_hash": config_hash(cfg),
            "world_size": ranks.world_size,
            "grad_accum": grad_accum_steps(cfg, ranks.world_size),
            "data": data.describe(),
        }
        if ranks.rank == 0:
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    from cordee.train.loop import run

    summary = run(cfg)
    if as_json and ranks.rank == 0:
        sys.stdout.write(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary.exit_code
