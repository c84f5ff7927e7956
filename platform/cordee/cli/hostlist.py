"""`cordee hostlist expand EXPR` and `cordee hostlist compress HOST...`: Slurm's hostlist grammar,
with the output of `scontrol show hostnames` / `scontrol show hostlist` (cordee.launch.hostlist)."""

from __future__ import annotations

import sys

import click

from cordee.cli.options import json_option, verb_group

SCHEMA = "cordee.hostlist/1"


@verb_group(
    "hostlist", "Expand and compress Slurm hostlists (same results as scontrol show hostnames / hostlist)."
)
def command() -> None:
    pass


def _emit(expr: str, hosts: list[str], as_json: bool, text: str) -> None:
    if as_json:
        import json

        doc = {"schema": SCHEMA, "hostlist": expr, "count": len(hosts), "hosts": hosts}
        text = json.dumps(doc)
    sys.stdout.write(text + "\n")


@command.command(
    "expand",
    short_help="Print the hosts of EXPR, one per line.",
    help="EXPR is a Slurm hostlist like 'nid[001-004],login1'; hosts come in Slurm's order, duplicates kept.",
)
@click.argument("expr", metavar="EXPR")
@json_option(SCHEMA)
def expand_hosts(expr: str, as_json: bool) -> int:
    from cordee.launch.hostlist import expand

    hosts = expand(expr)
    _emit(expr, hosts, as_json, "\n".join(hosts))
    return 0


@command.command(
    "compress",
    short_help="Print one hostlist expression for HOSTS.",
    help="HOSTS may be separated by commas or whitespace and may be hostlists themselves; '-' reads "
    "them from stdin. Keeps order and duplicates, like scontrol show hostlist (sort first for a "
    "canonical form).",
)
@click.argument("hosts", metavar="HOST...", nargs=-1, required=True)
@json_option(SCHEMA)
def compress_hosts(hosts: tuple[str, ...], as_json: bool) -> int:
    from cordee.errors import InputError
    from cordee.launch.hostlist import compress, expand

    names: list[str] = []
    for arg in hosts:
        if arg == "-":
            text = sys.stdin.read()
            if not text.strip():
                raise InputError("no hosts on stdin")
            names.extend(expand(text))
        elif any(c in arg for c in "[], \t\n"):
            names.extend(expand(arg))
        else:  # a plain name (the usual case, thousands of them): compress checks it
            names.append(arg)
    expr = compress(names)
    _emit(expr, names, as_json, expr)
    return 0
