"""`cordee env check [--profile P] [--data DIR] [--checkpoints DIR] [--json]`: the live environment
against a fabric profile, and the storage checks (cordee.storage.checks).

Exit code: 0 all ok, 1 warnings (missing or different values, storage warnings), 2 a dangerous
value, a storage failure or bad input (an unknown profile: one line naming the known ones)."""

from __future__ import annotations

import json
import os

import click

from cordee.cli.options import json_option


def _table(report, profile, chosen: str) -> list[str]:
    """Plain-text rendering: one row per variable, the why and source under each problem."""
    import textwrap

    extends = f", extends {profile.extends}" if profile.extends else ""
    nnodes = report.nnodes if report.nnodes is not None else "?"
    lines = [
        f"profile {profile.name} ({profile.family}{extends}; {chosen}), nnodes {nnodes}",
        f"  {profile.description}",
        "",
    ]
    rows = [("STATUS", "VARIABLE", "EXPECTED", "ACTUAL")]
    for item in report.items:
        actual = "(unset)" if item.actual is None else repr(item.actual) if item.actual == "" else item.actual
        rows.append((item.status, item.name, item.expected or "-", actual))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    wrap = textwrap.TextWrapper(
        width=100, initial_indent="    ", subsequent_indent="      ", break_on_hyphens=False
    )
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
        if n == 0:
            continue
        item = report.items[n - 1]
        if item.status != "ok":
            lines += wrap.wrap(f"why: {item.message}")
            lines += wrap.wrap(f"source: {item.source}")
    if report.optional:
        lines += ["", "optional (reported, not applied by default):"]
        for var in report.optional:
            lines += wrap.wrap(f"{var.name}={var.value}: {var.note} [{var.source}]")
    counts = report.counts()
    verdict = {0: "ok", 1: "warnings", 2: "dangerous values"}[report.exit_code]
    lines += [
        "",
        f"summary: {counts['ok']} ok, {counts['missing']} missing, {counts['different']} different, "
        f"{counts['dangerous']} dangerous -> {verdict} (exit {report.exit_code})",
    ]
    return lines


CHECK_HELP = (
    "Check the live environment against a fabric profile (missing, different and dangerous values) "
    "and its storage: caches on a shared filesystem (Triton, TorchInductor, Hugging Face, CUDA's JIT "
    "cache without CUDA_CACHE_DISABLE=1), the Lustre layout of the data and checkpoint directories, "
    "free space and inodes where checkpoints go. Exit 0 ok, 1 warnings, 2 dangerous values, failures "
    "or bad input."
)
_STORAGE_EXIT = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}


def _storage_lines(findings) -> list[str]:
    rows = [(f.status, f.check, f.detail) for f in findings]
    width = max(len(r[1]) for r in rows)
    return ["", "storage:"] + [f"  {s:<5} {c:<{width}}  {d}" for s, c, d in rows]


@click.command("check", help=CHECK_HELP, short_help=CHECK_HELP)
@click.option(
    "--profile",
    "profile_name",
    metavar="NAME",
    default=None,
    help="Fabric profile to check against (default: suggested from node count and hardware).",
)
@click.option(
    "--data", "data_dir", metavar="DIR", envvar="CORDEE_DATA_DIR", default=None,
    help="dataset directory: its Lustre layout is checked (default: $CORDEE_DATA_DIR).",
)  # fmt: skip
@click.option(
    "--checkpoints", "ckpt_dir", metavar="DIR", envvar="CORDEE_CKPT_DIR", default=None,
    help="checkpoint directory: its Lustre layout, free space and inodes are checked (default: "
    "$CORDEE_CKPT_DIR; warn below $CORDEE_FREE_WARN_PCT, default 10, fail below $CORDEE_FREE_FAIL_PCT, "
    "default 2 percent free).",
)  # fmt: skip
@json_option("cordee.envcheck/1")
def command(profile_name: str | None, data_dir: str | None, ckpt_dir: str | None, as_json: bool) -> int:
    from cordee import profiles
    from cordee.launch.launchenv import detect
    from cordee.profiles.check import check_environment
    from cordee.storage.checks import storage_findings

    environ = dict(os.environ)
    nnodes = detect(environ).nnodes
    if profile_name is None:
        profile_name, chosen = profiles.suggest(nnodes), "suggested"
    else:
        chosen = "--profile"
    profile = profiles.load(profile_name)
    report = check_environment(profile, environ, nnodes)
    storage = storage_findings(environ, data_dir=data_dir, ckpt_dir=ckpt_dir)
    code = max(report.exit_code, *(_STORAGE_EXIT[f.status] for f in storage))
    if as_json:
        doc = report.to_dict()
        doc["chosen"] = chosen
        doc["storage"] = [f.as_dict() for f in storage]
        doc["exit_code"] = code
        print(json.dumps(doc, indent=2))
    else:
        lines = _table(report, profile, chosen)
        print("\n".join([*lines[:-2], *_storage_lines(storage), "", lines[-1]]))
        if code != report.exit_code:
            print(f"storage: {'failures' if code == 2 else 'warnings'} -> exit {code}")
    return code
