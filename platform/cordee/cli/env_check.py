"""`cordee env check [--profile P] [--json]`: the live environment against a fabric profile.

Exit code: 0 all ok, 1 warnings (missing or different values), 2 a dangerous value or bad
input (an unknown profile: one line naming the known ones)."""

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


CHECK_HELP = "Check the live environment against a fabric profile: missing, different and dangerous values."


@click.command("check", help=CHECK_HELP, short_help=CHECK_HELP)
@click.option(
    "--profile",
    "profile_name",
    metavar="NAME",
    default=None,
    help="Fabric profile to check against (default: suggested from node count and hardware).",
)
@json_option("cordee.envcheck/1")
def command(profile_name: str | None, as_json: bool) -> int:
    from cordee import profiles
    from cordee.launch.launchenv import detect
    from cordee.profiles.check import check_environment

    environ = dict(os.environ)
    nnodes = detect(environ).nnodes
    if profile_name is None:
        profile_name, chosen = profiles.suggest(nnodes), "suggested"
    else:
        chosen = "--profile"
    profile = profiles.load(profile_name)
    report = check_environment(profile, environ, nnodes)
    if as_json:
        doc = report.to_dict()
        doc["chosen"] = chosen
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(_table(report, profile, chosen)))
    return report.exit_code
