"""`cordee hostlist expand EXPR` and `cordee hostlist compress HOST...`: Slurm's hostlist grammar,
with the output of `scontrol show hostnames` / `scontrol show hostlist` (cordee.cluster.hostlist)."""

from __future__ import annotations

import click

SCHEMA = "cordee.hostlist/1"


@click.group()
def hostlist() -> None:
    """Expand and compress Slurm hostlists (same results as scontrol show hostnames / hostlist)."""


def _emit(expr: str, hosts: list[str], as_json: bool, text: str) -> None:
    if as_json:
        import json

        doc = {"schema": SCHEMA, "hostlist": expr, "count": len(hosts), "hosts": hosts}
        click.echo(json.dumps(doc))
    else:
        click.echo(text)


@hostlist.command()
@click.argument("expr")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: schema, hostlist, count, hosts.")
def expand(expr: str, as_json: bool) -> None:
    """Print the hosts of EXPR, one per line.

    EXPR is a Slurm hostlist like 'nid[001-004],login1'; hosts come in Slurm's order, duplicates kept.
    """
    from cordee.cluster.hostlist import expand as expand_

    hosts = expand_(expr)
    _emit(expr, hosts, as_json, "\n".join(hosts))


@hostlist.command()
@click.argument("hosts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: schema, hostlist, count, hosts.")
def compress(hosts: tuple[str, ...], as_json: bool) -> None:
    """Print one hostlist expression for HOSTS.

    HOSTS may be separated by commas or whitespace and may be hostlists themselves; '-' reads them
    from stdin. Keeps order and duplicates, like scontrol show hostlist (sort first for a canonical
    form).
    """
    from cordee.cluster.hostlist import compress as compress_
    from cordee.cluster.hostlist import expand as expand_
    from cordee.errors import InputError

    names: list[str] = []
    for arg in hosts:
        if arg == "-":
            text = click.get_text_stream("stdin").read()
            if not text.strip():
                raise InputError("no hosts on stdin")
            names.extend(expand_(text))
        elif any(c in arg for c in "[], \t\n"):
            names.extend(expand_(arg))
        else:  # a plain name (the usual case, thousands of them): compress checks it
            names.append(arg)
    expr = compress_(names)
    _emit(expr, names, as_json, expr)
