"""What `cordee preflight` writes: a progress line per finished check, the terminal table, the JSON
document (schema cordee.preflight/1, schema/preflight.schema.json), JUnit XML for CI, the bad nodes
as a Slurm hostlist for `--exclude`, and a PNG of bus bandwidth against message size.

No torch, no numpy; matplotlib only inside plot(). Files are written atomically (fileio.write_atomic).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Iterable

from cordee.errors import CordeeError, InputError, one_line
from cordee.preflight.results import STATUSES, Result, exit_code, severity, worst

SCHEMA = "cordee.preflight/1"
VERDICTS = {0: "ok", 1: "warnings", 2: "failures", 3: "errors"}
CONFIG_PREFIX = "env."  # same image and environment on every node: excluding a node does not fix it
_MARK = {"ok": "ok", "skip": "skip", "warn": "WARN", "fail": "FAIL", "error": "ERROR"}


# --- numbers and one-line texts --------------------------------------------------------------


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    a = abs(v)
    return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"


def _threshold(r: Result) -> str:
    if r.threshold is None:
        return "-"
    kind = (r.data or {}).get("kind")
    return f"{kind} {_num(r.threshold)}" if kind in ("min", "max") else _num(r.threshold)


def _value(r: Result) -> str:
    return "-" if r.value is None or not math.isfinite(r.value) else f"{_num(r.value)} {r.unit}".rstrip()


def _where(r: Result) -> str:
    node = r.node or "job"
    return node if r.rank is None else f"{node} rank {r.rank}"


def progress_line(result: Result) -> str:
    """One line for a finished check, as the runner prints it while the run goes on."""
    r = result
    value = "" if _value(r) == "-" else f" {_value(r)}"
    limit = "" if r.threshold is None else f" ({_threshold(r)})"
    detail = f": {r.detail}" if r.detail else ""
    return one_line(
        f"[{_MARK[r.status]:>5}] {r.check} on {_where(r)}{value}{limit}{detail} ({r.duration_s:.2f} s)"
    )


def counts(results: Iterable[Result]) -> dict[str, int]:
    results = list(results)
    return {s: sum(1 for r in results if r.status == s) for s in STATUSES}


def summary_line(results: Iterable[Result]) -> str:
    results = list(results)
    c, code = counts(results), exit_code(results)
    bad = bad_nodes(results)
    exclude = f"; bad nodes ({len(bad)}): {exclude_hostlist(bad)}" if bad else ""
    parts = ", ".join(f"{c[s]} {s}" for s in STATUSES)
    return f"summary: {parts}{exclude} -> {VERDICTS[code]} (exit {code})"


def table(results: Iterable[Result]) -> str:
    """The readable report: one row per result, worst first, then a summary line with the counts,
    the bad nodes and the exit code."""
    results = list(results)
    ordered = sorted(
        results,
        key=lambda r: (-severity(r.status), r.check, natural_key(r.node), -1 if r.rank is None else r.rank),
    )
    rows = [("STATUS", "CHECK", "NODE", "RANK", "VALUE", "THRESHOLD", "DETAIL")]
    for r in ordered:
        rank = "-" if r.rank is None else str(r.rank)
        rows.append((_MARK[r.status], r.check, r.node or "job", rank, _value(r), _threshold(r), r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:6], widths, strict=True)) + "  " + row[6] for row in rows
    ]
    return "\n".join([one_line(line.rstrip()) for line in lines] + ["", summary_line(results)])


# --- bad nodes -------------------------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Sort key of host names: nid2 before nid10 (hostlists compress runs of numbers). The split
    alternates text and ASCII digit runs, so tuples compare str with str and int with int."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"([0-9]+)", name)))


_natural = natural_key  # the name the collector's outputs.py uses


def bad_nodes(results: Iterable[Result]) -> list[str]:
    """Nodes with a failed or errored result about the node itself, in natural order. A failed
    configuration check (env.*) does not count: the same image and environment run on every node,
    so excluding one fixes nothing. An error always counts: a rank that died, stalled or timed out
    there, whatever the check."""
    bad = set()
    for r in results:
        if r.node and (r.status == "error" or (r.status == "fail" and not r.check.startswith(CONFIG_PREFIX))):
            bad.add(r.node)
    return sorted(bad, key=natural_key)


def exclude_hostlist(nodes: Iterable[str]) -> str:
    """A Slurm hostlist for `--exclude` ("" when there are none)."""
    from cordee.launch.hostlist import compress

    nodes = list(nodes)
    return compress(nodes) if nodes else ""


# --- JSON ------------------------------------------------------------------------------------


def _iso(started) -> str | None:
    if started is None or isinstance(started, str):
        return started
    return datetime.datetime.fromtimestamp(float(started), datetime.UTC).isoformat(timespec="seconds")


def _finite(obj):
    """obj with every non-finite float (NaN, inf: not JSON) inside it replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


META_KEYS = ("level", "system", "nodes", "ranks", "started", "duration_s")


def document(results: Iterable[Result], meta: dict) -> dict:
    """The JSON document of a run. meta: level, system (required), nodes (list), ranks (int),
    started (epoch seconds or ISO 8601), duration_s; other keys are kept under "extra". Details are
    forced onto one line (control characters escaped), as the schema says."""
    from cordee import __version__

    results = list(results)
    bad = bad_nodes(results)
    extra = {k: v for k, v in meta.items() if k not in META_KEYS}
    return {
        "schema": SCHEMA,
        "cordee_version": __version__,
        "level": meta["level"],
        "system": meta["system"],
        "nodes": list(meta.get("nodes") or []),
        "ranks": meta.get("ranks"),
        "started": _iso(meta.get("started")),
        "duration_s": meta.get("duration_s"),
        "exit_code": exit_code(results),
        "summary": counts(results),
        "bad_nodes": bad,
        "exclude": exclude_hostlist(bad),
        "results": [_finite(r.as_dict() | {"detail": one_line(r.detail)}) for r in results],
        "extra": extra,
    }


# --- JUnit -----------------------------------------------------------------------------------

_XML_BAD = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: object) -> str:
    """Text XML 1.0 can carry: characters it forbids (most control characters) are escaped."""
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _testcase(suite, node: str, check: str, group: list[Result]) -> str:
    import xml.etree.ElementTree as ET

    top = max(group, key=lambda r: severity(r.status))
    status = worst(r.status for r in group)
    case = ET.SubElement(
        suite,
        "testcase",
        classname=_xml(node),
        name=_xml(check),
        time=f"{sum(r.duration_s for r in group):.3f}",
    )
    props = ET.SubElement(case, "properties")
    for name, value in (
        ("status", status),
        ("value", top.value),
        ("threshold", top.threshold),
        ("unit", top.unit),
    ):
        if isinstance(value, float) and math.isfinite(value):
            ET.SubElement(props, "property", name=name, value=f"{value:.6g}")
        elif isinstance(value, str) and value:
            ET.SubElement(props, "property", name=name, value=_xml(value))
    limit = f" ({_threshold(top)})" if top.threshold is not None else ""
    message = _xml(one_line(top.detail or f"{top.check}: {_value(top)}{limit}"))
    tag = {"fail": "failure", "error": "error", "skip": "skipped"}.get(status)
    if tag:
        element = ET.SubElement(case, tag, message=message)
        if tag != "skipped":
            element.set("type", status)
            element.text = "\n".join(_xml(progress_line(r)) for r in group if r.status == status)
    ET.SubElement(case, "system-out").text = "\n".join(_xml(progress_line(r)) for r in group)
    return status


def junit(results: Iterable[Result], meta: dict) -> str:
    """JUnit XML as GitLab (artifacts:reports:junit) and Jenkins read it: one testsuite per node
    (job-wide results under "job"), one testcase per check per node (classname = node, name =
    check), the worst result deciding failure / error / skipped; warnings pass, marked in
    system-out and in the "status" property."""
    import xml.etree.ElementTree as ET

    results = list(results)
    groups: dict[str, dict[str, list[Result]]] = {}
    for r in results:
        groups.setdefault(r.node or "job", {}).setdefault(r.check, []).append(r)
    root = ET.Element("testsuites", name=_xml(f"cordee preflight {meta.get('level', '')}".strip()))
    stamp = _iso(meta.get("started"))
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    total_time = 0.0
    for node in sorted(groups, key=natural_key):
        suite = ET.SubElement(root, "testsuite", name=_xml(node))
        if stamp:
            suite.set("timestamp", stamp[:19])  # xs:dateTime without zone, as Ant's junit writes it
        props = ET.SubElement(suite, "properties")
        for key in ("system", "level"):
            if meta.get(key):
                ET.SubElement(props, "property", name=key, value=_xml(meta[key]))
        n = dict.fromkeys(totals, 0)
        for check, group in groups[node].items():
            status = _testcase(suite, node, check, group)
            n["tests"] += 1
            key = {"fail": "failures", "error": "errors", "skip": "skipped"}.get(status)
            if key:
                n[key] += 1
        seconds = sum(r.duration_s for g in groups[node].values() for r in g)
        for key, value in n.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{seconds:.3f}")
        total_time += seconds
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- the plot --------------------------------------------------------------------------------


class NoPlotData(CordeeError):
    """The results hold no collective sweep to plot."""


MAX_LINES = 8  # lines per panel; beyond that: the median, the min-max band and the lowest groups


def sweep_rows(results: Iterable[Result]) -> list[dict]:
    """The sweep rows of every result, each a dict with op (e.g. "all_reduce"), bytes (message
    size), busbw_gbps (bus bandwidth in GB/s, nccl-tests doc/PERFORMANCE.md), scope ("intra" or
    "inter") and node (what the line is labelled with). They come from Result.data["rows"] (the
    bench engine's SweepRow.as_dict(): op, bytes, busbw_gbps, ...); scope and node, where a row
    lacks them, from Result.data["scope"] and the Result's node (intra), or Result.data["nodes"]
    and the reporting rank (inter). Rows without a positive size or a finite bandwidth are left out."""
    rows = []
    for r in results:
        data = r.data or {}
        scope = data.get("scope")
        nodes = data.get("nodes") if isinstance(data.get("nodes"), list) else []
        if r.node:
            label = r.node
        elif nodes:
            label = f"{len(nodes)} nodes" + ("" if r.rank is None else f", from rank {r.rank}")
        else:
            label = "all nodes"
        for row in data.get("rows") or []:
            if not isinstance(row, dict) or not isinstance(row.get("op"), str):
                continue
            size, bw = row.get("bytes"), row.get("busbw_gbps")
            good_bw = isinstance(bw, int | float) and math.isfinite(bw) and bw >= 0
            if isinstance(size, int) and size > 0 and good_bw:
                rows.append({"scope": scope, "node": label, **row})
    return rows


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}"
        n /= 1024
    return str(n)


_SCOPES = {"intra": "within each node", "inter": "across nodes"}


def _panel(ax, title: str, rows: list[dict]) -> None:
    lines: dict[str, dict[int, float]] = {}
    for row in rows:
        lines.setdefault(row.get("node") or "all nodes", {})[row["bytes"]] = float(row["busbw_gbps"])
    sizes = sorted({s for pts in lines.values() for s in pts})
    if len(lines) <= MAX_LINES:
        for label, pts in sorted(lines.items()):
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], marker="o", markersize=3, label=label)
    else:  # thousands of nodes: the spread, and the groups to look at
        import statistics

        at = {s: [pts[s] for pts in lines.values() if s in pts] for s in sizes}
        ax.fill_between(
            sizes, [min(at[s]) for s in sizes], [max(at[s]) for s in sizes], alpha=0.2, label="min-max"
        )
        ax.plot(sizes, [statistics.median(at[s]) for s in sizes], color="black", label="median")
        largest = sizes[-1]
        lowest = sorted((pts.get(largest, 0.0), label) for label, pts in lines.items())[: MAX_LINES - 2]
        for _, label in lowest:
            xs = sorted(lines[label])
            ax.plot(xs, [lines[label][x] for x in xs], linewidth=1, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes[:: max(1, len(sizes) // 8)], [_size(s) for s in sizes[:: max(1, len(sizes) // 8)]])
    ax.set_title(title)
    ax.set_xlabel("message size")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def plot(results: Iterable[Result], path, title: str = "cordee preflight: bus bandwidth") -> None:
    """A PNG at `path`: one panel per collective and scope (within nodes, across nodes), bus
    bandwidth against message size (log2 axis), one line per node or group (see sweep_rows for the
    row format); past MAX_LINES lines, the median, the min-max band and the lowest groups at the
    largest size. NoPlotData when there is nothing to plot."""
    rows = sweep_rows(results)
    if not rows:
        raise NoPlotData(
            "no collective sweep in these results to plot (the sweeps run at --level standard or long)"
        )
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("the plot needs matplotlib: pip install 'cordee[plot]'") from None
    import io

    panels = sorted({(r["op"], r.get("scope") or "") for r in rows})
    fig = Figure(figsize=(9, 3.4 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without pyplot's global state
    for ax, (op, scope) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels, strict=True):
        heading = f"{op} {_SCOPES.get(scope, '')}".strip()
        _panel(ax, heading, [r for r in rows if r["op"] == op and (r.get("scope") or "") == scope])
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _write(path, buf.getvalue())


# --- files -----------------------------------------------------------------------------------


def _write(path, data: str | bytes) -> None:
    from cordee.errors import shown
    from cordee.fileio import write_atomic

    try:
        write_atomic(path, data)
    except OSError as e:
        raise InputError(f"cannot write {shown(str(path), 512)}: {e.strerror or e}") from None


def write_json(path, doc: dict) -> None:
    _write(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def write_junit(path, results: Iterable[Result], meta: dict) -> None:
    _write(path, junit(results, meta))


def write_exclude(path, nodes: Iterable[str]) -> None:
    """The bad nodes as one hostlist line (an empty file when there are none): srun --exclude=$(cat F)."""
    text = exclude_hostlist(nodes)
    _write(path, text + "\n" if text else "")
