"""`cordee net show [--json]`: the interconnect as NCCL would see it, without a GPU job.

No torch here: libnccl, the net plugin and libfabric are loaded through ctypes in child
processes with a timeout (cordee.interconnect.netreport). Exit code: 0 all ok, 1 warnings,
2 a failure or bad input (an override or NCCL_NET_PLUGIN path that does not exist).
"""

from __future__ import annotations

import json
import math
import os
import sys

from cordee.cli import UsageError, add_json_flag
from cordee.interconnect import netreport
from cordee.interconnect.netreport import SCHEMA, collect

_EXIT = {"ok": 0, "info": 0, "warn": 1, "fail": 2}


def register(sub, name: str, help_: str) -> None:
    parser = sub.add_parser(name, help=help_, description=help_)
    verbs = parser.add_subparsers(
        dest="net_verb", metavar="COMMAND", required=True, parser_class=type(parser)
    )
    show = verbs.add_parser(
        "show",
        help="NCCL, the net plugin and its NICs, libfabric providers, CXI devices and links.",
        description="Load libnccl, the NCCL net plugin (NCCL_NET_PLUGIN rules) and libfabric the "
        "way a job would, read CXI devices and high-speed interfaces from sysfs, and give a verdict "
        "per item. Overrides: CORDEE_NCCL_LIBRARY, CORDEE_LIBFABRIC_LIBRARY (file paths). "
        "Exit 0 ok, 1 warnings, 2 failure or bad input.",
    )
    add_json_flag(show, SCHEMA)
    show.add_argument("--provider", help="Only this libfabric provider (e.g. cxi, tcp).")
    show.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="Seconds for each library probe (default 20).",
    )
    show.set_defaults(run=run_show)


def run_show(args) -> int:
    # nan or inf would leave the children unbounded (nan even ends in a traceback)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"cordee net show: --timeout {args.timeout:g}: must be a positive number of seconds")
    doc = collect(os.environ, timeout=args.timeout, provider=args.provider)
    sys.stdout.write((json.dumps(doc, indent=2) if args.as_json else netreport.render_text(doc)) + "\n")
    return _EXIT[doc["status"]]
