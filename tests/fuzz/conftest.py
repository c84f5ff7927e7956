"""At the end of the session: runs and seconds per verb, violations by root cause (and the same as
JSON where CORDEE_FUZZ_SUMMARY points)."""

from __future__ import annotations

import os

from fuzz.journal import JOURNAL


def pytest_terminal_summary(terminalreporter) -> None:
    if not JOURNAL.runs:
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", f"cordee fuzz: {sum(JOURNAL.runs.values())} runs")
    for verb, count in sorted(JOURNAL.runs.items()):
        write(f"{verb:<24} {count:>6} runs {JOURNAL.seconds[verb]:>8.1f} s")
    groups = JOURNAL.grouped()
    if groups:
        write(f"contract violations, by probable root cause ({len(groups)}):")
        for key, items in groups.items():
            write(f"  {len(items):>5}  {key}")
    path = os.environ.get("CORDEE_FUZZ_SUMMARY")
    if path:
        JOURNAL.write(path)
        write(f"summary written to {path}")
