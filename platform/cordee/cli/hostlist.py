"""`cordee hostlist expand EXPR` and `cordee hostlist compress HOST...`: Slurm's hostlist grammar,
with the output of `scontrol show hostnames` / `scontrol show hostlist` (cordee.launch.hostlist)."""

from __future__ import annotations

import sys

from cordee.cli import add_json_flag

SCHEMA = "cordee.hostlist/1"


def register(sub, name: str, help_: str) -> None:
    parser = sub.add_parser(
        name,
        help=help_,
        description="Expand and compress Slurm hostlists (same results as "
        "scontrol show hostnames / hostlist).",
    )
    verbs = parser.add_subparsers(
        dest="hostlist_verb", metavar="COMMAND", required=True, parser_class=type(parser)
    )
    expand = verbs.add_parser(
        "expand",
        help="Print the hosts of EXPR, one per line.",
        description="EXPR is a Slurm hostlist like 'nid[001-004],login1'; hosts come in Slurm's "
        "order, duplicates kept.",
    )
    expand.add_argument("expr", metavar="EXPR")
    add_json_flag(expand, SCHEMA)
    expand.set_defaults(run=run_expand)
    compress = verbs.add_parser(
        "compress",
        help="Print one hostlist expression for HOSTS.",
        description="HOSTS may be separated by commas or whitespace and may be hostlists "
        "themselves; '-' reads them from stdin. Keeps order and duplicates, like scontrol show "
        "hostlist (sort first for a canonical form).",
    )
    compress.add_argument("hosts", metavar="HOST", nargs="+")
    add_json_flag(compress, SCHEMA)
    compress.set_defaults(run=run_compress)


def _emit(expr: str, hosts: list[str], as_json: bool, text: str) -> None:
    if as_json:
        import json

        doc = {"schema": SCHEMA, "hostlist": expr, "count": len(hosts), "hosts": hosts}
        text = json.dumps(doc)
    sys.stdout.write(text + "\n")


def run_expand(args) -> int:
    from cordee.launch.hostlist import expand

    hosts = expand(args.expr)
    _emit(args.expr, hosts, args.as_json, "\n".join(hosts))
    return 0


def run_compress(args) -> int:
    from cordee.errors import InputError
    from cordee.launch.hostlist import compress, expand

    names: list[str] = []
    for arg in args.hosts:
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
    _emit(expr, names, args.as_json, expr)
    return 0
