"""`cordee net show [--json]`: the interconnect as NCCL would see it, without a GPU job.

No torch here: libnccl, the net plugin and libfabric are loaded through ctypes in child
processes with a timeout (cordee.interconnect.netreport). Exit code: 0 all ok, 1 warnings,
2 a failure or bad input (an override or NCCL_NET_PLUGIN path that does not exist).
"""

from __future__ import annotations

import json
import os
import sys

import click

from cordee.cli import VERBS
from cordee.cli.options import Seconds, json_option, verb_group
from cordee.interconnect import netreport
from cordee.interconnect.netreport import SCHEMA, collect

_EXIT = {"ok": 0, "info": 0, "warn": 1, "fail": 2}


@verb_group("net", VERBS["net"].help)
def command() -> None:
    pass


@command.command(
    "show",
    short_help="NCCL, the net plugin and its NICs, libfabric providers, CXI devices and links.",
    help="Load libnccl, the NCCL net plugin (NCCL_NET_PLUGIN rules) and libfabric the way a job would, "
    "read CXI devices and high-speed interfaces from sysfs, and give a verdict per item. Overrides: "
    "CORDEE_NCCL_LIBRARY, CORDEE_LIBFABRIC_LIBRARY (file paths). Exit 0 ok, 1 warnings, 2 failure or "
    "bad input.",
)
@json_option(SCHEMA)
@click.option("--provider", metavar="PROVIDER", help="Only this libfabric provider (e.g. cxi, tcp).")
@click.option(
    "--timeout",
    type=Seconds(most=3600),
    default=20.0,
    metavar="S",
    help="Seconds for each library probe (default 20).",
)
def show(as_json: bool, provider: str | None, timeout: float) -> int:
    doc = collect(os.environ, timeout=timeout, provider=provider)
    sys.stdout.write((json.dumps(doc, indent=2) if as_json else netreport.render_text(doc)) + "\n")
    return _EXIT[doc["status"]]
