"""`cordee bench collectives|gemm|hbm`: the preflight's engines with full tables (cordee.bench).

`collectives` runs in every rank of a launched job (`cordee launch --nproc-per-node 2 -- cordee
bench collectives`, or under srun); rank 0 prints, every rank exits with the same code. Alone it
forms a group of one rank. `gemm` and `hbm` measure this process's device. Exit 0 ok, 2 a wrong
result or bad input, 3 a collective that failed or did not finish within --timeout.
Sizes are bytes, with K, M, G, T suffixes (binary, as nccl-tests' -b/-e): 64K, 1M, 2G.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys

import click

from cordee.cli import VERBS
from cordee.cli.options import Number, Seconds, json_option, verb_group
from cordee.errors import CordeeError, one_line, shown
from cordee.numbers import as_int

SCHEMA = "cordee.bench/1"
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_BYTES = 1 << 36  # 64 GiB per buffer
MAX_LIST = 64
_SIZE = re.compile(r"([0-9]{1,15})([KMGT]?)(?:I?B)?", re.ASCII | re.IGNORECASE)
DEVICE = click.Choice(["auto", "cpu", "cuda"])


def parse_size(text: str) -> int:
    """'64K' -> 65536; ValueError with the reason on anything else."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{shown(text)} is not a size (bytes, or with K, M, G, T: 64K, 1M, 2G)")
    value = int(m.group(1)) * UNITS[m.group(2).upper()]
    if not 1 <= value <= MAX_BYTES:
        raise ValueError(f"{shown(text)} must be 1 byte..64G")
    return value


class SizeList(click.ParamType):
    """Comma-separated sizes (bytes with suffixes) or, for gemm, matrix orders."""

    name = "sizes"

    def __init__(self, parse=parse_size, single: bool = False) -> None:
        self.parse, self.single = parse, single
        self.name = "size" if single else "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, list | int):
            return value
        items = [value] if self.single else value.split(",")
        if len(items) > MAX_LIST:
            self.fail(f"at most {MAX_LIST} sizes, not {len(items)}", param, ctx)
        try:
            sizes = [self.parse(item) for item in items]
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return sizes[0] if self.single else sizes


def _order(text: str) -> int:
    n = as_int(text)
    if n is None or not 1 <= n <= 65536:
        raise ValueError(f"{shown(text)} is not a matrix order in 1..65536")
    return n


@verb_group("bench", VERBS["bench"].help)
def command() -> None:
    pass


def common(f):
    f = click.option(
        "--timeout",
        type=Seconds(most=3600),
        default=120.0,
        metavar="S",
        show_default=True,
        help="Seconds: the process group's timeout, and the deadline of each op's sweep or measurement.",
    )(f)
    f = click.option(
        "--device",
        type=DEVICE,
        default="auto",
        show_default=True,
        help="auto: this rank's GPU if torch sees one, else the CPU.",
    )(f)
    f = click.option(
        "--warmup", type=Number(int, 0, 10000), default=5, show_default=True, help="Untimed calls first."
    )(f)
    f = click.option(
        "--iters",
        type=Number(int, 1, 100000),
        default=20,
        show_default=True,
        help="Timed calls, back to back.",
    )(f)
    return json_option(SCHEMA)(f)


@command.command(
    "collectives",
    help="Sweep message sizes for each collective: time, algbw, busbw "
    "(nccl-tests' definitions), and a separate checking pass (-c). Run it in every rank.",
)
@click.option(
    "--min-bytes", type=SizeList(single=True), help="Smallest size (default 1M on GPUs, 64K on CPUs)."
)
@click.option(
    "--max-bytes", type=SizeList(single=True), help="Largest size (default 1G on GPUs, 4M on CPUs)."
)
@click.option(
    "--factor", type=Number(int, 2, 1024), help="Each size is the previous one times this (default 4)."
)
@click.option("--sizes", type=SizeList(), help="Explicit comma-separated sizes instead: 1M,64M,1G.")
@click.option(
    "--ops",
    default="all",
    show_default=True,
    help="Comma-separated: all_reduce, all_gather, reduce_scatter, alltoall, sendrecv.",
)
@click.option("--no-check", is_flag=True, help="Skip the checking pass.")
@click.option("--dtype", help="float32, bf16 or float16 (default bf16 on GPUs, float32 on CPUs).")
@common
def collectives(
    min_bytes, max_bytes, factor, sizes, ops, no_check, dtype, as_json, iters, warmup, device, timeout
):
    from cordee.bench import collectives as engine
    from cordee.bench import group as groups

    if sizes and (min_bytes or max_bytes or factor):
        raise click.UsageError("use --sizes or --min-bytes/--max-bytes/--factor, not both")
    op_list = _ops(ops)
    dtype = engine.dtype_name(dtype) if dtype else None
    fault = engine.fault_from_env(os.environ)
    dev = _device(device)
    if not sizes:
        gpu = dev.startswith("cuda")
        sizes = _geometric(
            min_bytes or (1 << 20 if gpu else 64 << 10),
            max_bytes or (1 << 30 if gpu else 4 << 20),
            factor or 4,
        )
    info = groups.init_group(timeout_s=timeout, device=dev)
    try:
        if info.world_size == 1 and ops == "all":
            op_list.remove("sendrecv")  # a ring of one rank: nothing to measure
        rows = []
        for op in op_list:
            rows += engine.sweep(
                op,
                sizes,
                device=info.device,
                dtype=dtype,
                iters=iters,
                warmup=warmup,
                check=not no_check,
                timeout_s=timeout,
                fault=fault,
            )
        ok = all(r.wrong == 0 for r in rows)
        if info.rank == 0:
            settings = {
                "ranks": info.world_size,
                "nodes": info.launch.nnodes,
                "backend": info.backend,
                "device": info.device,
                "iters": iters,
                "warmup": warmup,
                "check": not no_check,
            }
            doc = _doc("collectives", settings, [r.as_dict() for r in rows], ok)
            _print(doc, as_json, _collectives_table)
        code = 0 if ok else 2
    except CordeeError as e:
        _leave(e.exit_code, f"cordee: error: {e}")
    _leave(code)


def _leave(code: int, line: str | None = None) -> None:
    """Exit at once, with no teardown of the process group: tearing down a group that failed (a
    peer lost) or the interpreter's own teardown can abort in gloo's threads ("terminate called
    without an active exception", exit 134) and hide the real code. The kernel closes the sockets."""
    from cordee.process import exit_now

    if line is not None:
        with contextlib.suppress(OSError, ValueError):
            print(one_line(line), file=sys.stderr)
    exit_now(code)


@command.command("gemm", help="n x n bf16 (GPU) or float32 (CPU) matrix multiplies: TFLOP/s = 2n^3/t.")
@click.option(
    "--sizes", type=SizeList(_order), help="Matrix orders n, comma-separated (default 8192 GPU, 1024 CPU)."
)
@click.option("--dtype", help="bf16, float16 or float32 (default bf16 on GPUs, float32 on CPUs).")
@common
def gemm(sizes, dtype, as_json, iters, warmup, device, timeout):
    from cordee.bench import gemm as engine
    from cordee.bench.collectives import dtype_name

    dtype = dtype_name(dtype) if dtype else None
    dev = _device(device)
    rows = [
        engine.gemm(dev, n=n, dtype=dtype, iters=iters, warmup=warmup, timeout_s=timeout)
        for n in sizes or [None]
    ]
    _print(_doc("gemm", {"device": dev}, rows, True), as_json, _gemm_table)
    return 0


@command.command("hbm", help="Device memory copy bandwidth, read + write: GB/s = 2 x bytes / t.")
@click.option("--sizes", type=SizeList(), help="Buffer sizes, comma-separated (default 1G GPU, 64M CPU).")
@common
def hbm(sizes, as_json, iters, warmup, device, timeout):
    from cordee.bench import hbm as engine

    dev = _device(device)
    rows = [
        engine.copy_bandwidth(dev, nbytes=s, iters=iters, warmup=warmup, timeout_s=timeout)
        for s in sizes or [None]
    ]
    ok = all(r["verified"] for r in rows)
    _print(_doc("hbm", {"device": dev}, rows, ok), as_json, _hbm_table)
    return 0 if ok else 2


def _ops(text: str) -> list[str]:
    from cordee.bench.collectives import OPS, check_op

    names = list(OPS) if text == "all" else [x.strip() for x in text.split(",")]
    return [check_op(x) for x in dict.fromkeys(names)]


def _geometric(lo: int, hi: int, factor: int) -> list[int]:
    if lo > hi:
        raise click.UsageError(f"--min-bytes {lo} is larger than --max-bytes {hi}")
    sizes = [lo]
    while sizes[-1] * factor <= hi:
        sizes.append(sizes[-1] * factor)
    return sizes


def _device(device: str) -> str:
    from cordee.bench.group import resolve_device
    from cordee.launch.launchenv import detect

    return resolve_device(device, detect(os.environ).local_rank)


def _doc(benchmark: str, settings: dict, rows: list[dict], ok: bool) -> dict:
    import torch
    import torch.distributed as dist

    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available() and dist.is_nccl_available():
        versions["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "ok": ok,
        **settings,
        "versions": versions,
        "rows": rows,
    }


def _print(doc: dict, as_json: bool, table) -> None:
    text = json.dumps(doc, indent=2) if as_json else "\n".join(table(doc))
    sys.stdout.write(text + "\n")


def _collectives_table(doc: dict) -> list[str]:
    head = f"{'op':<15}{'bytes':>12} {'dtype':<9}{'time us':>11}{'algbw GB/s':>12}{'busbw GB/s':>12}  check"
    lines = [f"{doc['ranks']} ranks on {doc['nodes']} node(s), {doc['backend']}, {doc['device']}", head]
    for r in doc["rows"]:
        check = "-" if not r["checked"] else "ok" if not r["wrong"] else f"WRONG {r['wrong']} elements"
        if r["wrong_ranks"]:
            check += f" from ranks {','.join(map(str, r['wrong_ranks']))}"
        if r["rounded"]:
            check += f" (asked {r['requested_bytes']}, rounded to the rank count)"
        lines.append(
            f"{r['op']:<15}{r['bytes']:>12} {r['dtype']:<9}{r['time_us']:>11.1f}"
            f"{r['algbw_gbps']:>12.3f}{r['busbw_gbps']:>12.3f}  {check}"
        )
    return lines


def _gemm_table(doc: dict) -> list[str]:
    lines = [f"gemm on {doc['device']}", f"{'n':>7} {'dtype':<9}{'ms':>10}{'TFLOP/s':>10}"]
    lines += [
        f"{r['n']:>7} {r['dtype']:<9}{r['seconds'] * 1e3:>10.3f}{r['tflops']:>10.3f}" for r in doc["rows"]
    ]
    return lines


def _hbm_table(doc: dict) -> list[str]:
    lines = [f"device copy on {doc['device']}", f"{'bytes':>12}{'ms':>10}{'GB/s':>10}  copy"]
    for r in doc["rows"]:
        lines.append(
            f"{r['bytes']:>12}{r['seconds'] * 1e3:>10.3f}{r['gbps']:>10.1f}  "
            f"{'ok' if r['verified'] else 'WRONG'}"
        )
    return lines
