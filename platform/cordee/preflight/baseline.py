"""Profiles from earlier runs (`cordee preflight baseline RESULTS...`): read cordee.preflight/1
result files, take the median of each measured metric, write a profile in the shipped TOML format
(SuperBench's baseline-and-tolerance rules, as data)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from cordee.errors import InputError, one_line, shown
from cordee.fileio import read_json
from cordee.preflight.systems import (
    _NAME_RE,
    FILE_KEY,
    MAX_GPUS,
    MEASURED,
    METRICS,
    RESULTS_MAX_BYTES,
    RESULTS_SCHEMA,
    SystemProfile,
    Threshold,
    _finite,
    list_systems,
    load_system,
)


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """The cordee.preflight/1 JSON documents at `paths`, each with its path under FILE_KEY.
    InputError for an unreadable file, a file that is not JSON, a wrong schema or a malformed result."""
    from cordee.preflight.results import Result

    docs = []
    for path in paths:
        path = os.fspath(path)
        name = shown(path)
        doc = read_json(path, "results file", RESULTS_MAX_BYTES)
        if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
            found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise InputError(
                f"{name}: schema is {shown(found)}, expected {RESULTS_SCHEMA!r} (cordee preflight --json)"
            )
        results = doc.get("results")
        if not isinstance(results, list):
            raise InputError(f"{name}: field 'results' must be a list of results")
        for i, item in enumerate(results):
            try:
                result = Result.from_dict(item)
            except InputError as e:
                raise InputError(f"{name}: results[{i}]: {e}") from None
            except OverflowError:  # an integer beyond float's range
                raise InputError(f"{name}: results[{i}]: a number too large for a measurement") from None
            if result.value is not None and result.value < 0 and _metric(item) in MEASURED:
                raise InputError(
                    f"{name}: results[{i}]: {_metric(item)} {result.value:g} is negative: not a measurement"
                )
        docs.append({**doc, FILE_KEY: path})
    return docs


def baseline(
    result_docs: list[dict], tolerance: float = 0.1, name: str = "baseline", base: SystemProfile | None = None
) -> str:
    """A profile (TOML text) from earlier runs: the profile the runs were judged with (`base`, else
    the shipped one their documents name, with the variant of their ranks per node), each measured
    performance metric (MEASURED) replaced by its median over every result: fail at median x (1 -
    tolerance), warn at median x (1 - tolerance / 2) (x (1 + ...) for a max metric). Health limits,
    counts and ratios (ECC, temperature, straggler_ratio, ...) are kept: a median of zero errors or a
    ratio near 1 by construction makes no limit. InputError on anything it cannot use."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 < tolerance < 1:
        raise InputError(f"baseline tolerance must be a number > 0 and < 1, got {shown(tolerance)}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"baseline name {shown(name)}: use lowercase letters, digits, '.', '_', '-'")
    if not result_docs:
        raise InputError("baseline needs at least one preflight results file")
    files = [str(d.get(FILE_KEY) or f"document {i + 1}") for i, d in enumerate(result_docs)]
    systems = {str(d.get("system")) for d in result_docs}
    if len(systems) != 1:
        raise InputError(f"baseline: the results come from different systems ({', '.join(sorted(systems))})")
    system = systems.pop()
    if base is None and system not in list_systems():
        raise InputError(
            f"baseline: {_names(files)} ran with system {shown(system)}, not a shipped profile "
            f"(known: {', '.join(list_systems())}); name the profile file the runs used"
        )
    values: dict[str, list[float]] = {}
    ranks_per_node: dict[str, set[int]] = {}
    for doc in result_docs:
        for r in doc.get("results") or []:
            if r.get("node") and r.get("rank") is not None:
                ranks_per_node.setdefault(r["node"], set()).add(r["rank"])
            metric, value = _metric(r), r.get("value")
            if metric in MEASURED and r.get("status") in ("ok", "warn", "fail") and _finite(value):
                values.setdefault(metric, []).append(float(value))
    if not values:
        raise InputError(f"baseline: no measured metric in {_names(files)} (run the standard level first)")
    counts = Counter(len(ranks) for ranks in ranks_per_node.values())
    gpus = counts.most_common(1)[0][0] if counts else None
    if base is None and gpus is not None and gpus > MAX_GPUS:
        raise InputError(
            f"baseline: {_names(files)} show {gpus} ranks on one node; a profile describes 1 to "
            f"{MAX_GPUS} GPUs per node"
        )
    if base is None:
        base = load_system(system, gpus=gpus)
    thresholds = dict(base.thresholds)
    for metric, found in sorted(values.items()):
        median = statistics.median(found)
        sign = 1 if METRICS[metric] == "max" else -1
        fail, warn = _round(median * (1 + sign * tolerance)), _round(median * (1 + sign * tolerance / 2))
        unit = base.threshold(metric).unit if base.threshold(metric) else _unit(result_docs, metric)
        source = (
            f"baseline: median {median:.4g} of {len(found)} results from {_names(files)}; "
            f"fail at {1 + sign * tolerance:g}x, warn at {1 + sign * tolerance / 2:g}x"
        )
        thresholds[metric] = Threshold(metric, METRICS[metric], fail, warn, unit, source)
    description = f"{name}: baseline of {base.name} from {_names(files)} (tolerance {tolerance:g})"
    profile = replace(base, name=name, description=description, thresholds=thresholds)
    kept = sorted(set(thresholds) - set(values))
    header = [
        f"{name}: written by cordee preflight baseline from {_names(files)}.",
        f"Measured metrics (median of the runs): {', '.join(sorted(values))}.",
        f"Kept from {base.name}: {', '.join(kept) or 'none'}.",
    ]
    return profile_toml(profile, header)


def profile_toml(profile: SystemProfile, header: Iterable[str] = ()) -> str:
    """`profile` as TOML in the format load_system_file() reads (flat: no [gpus.N] variants)."""
    lines = [f"# {one_line(line)}" for line in header]
    lines += [f"description = {_toml_str(profile.description)}", f"backend = {_toml_str(profile.backend)}"]
    for key in ("gpus_per_node", "nics_per_node", "nvlink_links"):
        if getattr(profile, key) is not None:
            lines.append(f"{key} = {getattr(profile, key)}")
    if profile.libfabric_provider is not None:
        lines.append(f"libfabric_provider = {_toml_str(profile.libfabric_provider)}")
    lines.append(f"net_plugin = {str(profile.net_plugin).lower()}")
    lines.append(f"nvls = {str(profile.nvls).lower()}")
    lines.append(f"large_message_bytes = {profile.large_message_bytes}")
    lines.append(f"sweep = [{', '.join(str(s) for s in profile.sweep)}]")
    for metric, t in sorted(profile.thresholds.items()):
        lines += ["", f"[thresholds.{metric}]", f'kind = "{t.kind}"', f"fail = {float(t.fail)!r}"]
        if t.warn is not None:
            lines.append(f"warn = {float(t.warn)!r}")
        lines += [f"unit = {_toml_str(t.unit)}", f"source = {_toml_str(t.source)}"]
    return "\n".join(lines) + "\n"


# --- small helpers -----------------------------------------------------------------------------


def _metric(result: dict) -> str | None:
    """The metric a result measures: its data's "metric", else its check's name."""
    metric = (result.get("data") or {}).get("metric") or result.get("check")
    return metric if isinstance(metric, str) else None


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _names(files: list[str]) -> str:
    names = [os.path.basename(f) for f in files]
    return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])} and {len(names) - 3} more"


def _unit(docs: list[dict], metric: str) -> str:
    units = Counter(
        r.get("unit") for d in docs for r in d.get("results") or [] if _metric(r) == metric and r.get("unit")
    )
    return units.most_common(1)[0][0] if units else "GB/s"


def _toml_str(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
