"""What the fuzz runs did, session-wide: runs and seconds per verb, every violation with its run.

Printed at the end of the session (conftest.py) and written as JSON where CORDEE_FUZZ_SUMMARY
points. A fuzz test records its runs and fails at its end with every violation they showed;
`assert_contract` records one run and fails at once (tests/test_bad_input.py).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

from fuzz.contract import Violation, check
from fuzz.runner import Outcome


def short(value: object, limit: int = 120) -> str:
    """repr() of a value, a long one cut in the middle with its length (5000-digit numbers)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 4 :]} ({len(text)} chars)"


def describe(outcome: Outcome, limit: int = 80) -> str:
    """The run as a command line; values longer than `limit` cut (the JSON summary keeps more)."""
    env = " ".join(f"{k}={short(v, limit)}" for k, v in outcome.env.items())
    files = ", ".join(outcome.command.files)
    argv = " ".join(short(a, limit) for a in outcome.argv[1:])
    return f"{env + ' ' if env else ''}cordee {argv}" + (f"  [files: {files}]" if files else "")


class Journal:
    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.violations: list[tuple[Violation, str, str]] = []  # (violation, run described, in full)

    def record(self, outcome: Outcome) -> list[Violation]:
        verb = outcome.command.verb
        self.runs[verb] += 1
        self.seconds[verb] += outcome.seconds
        found = check(outcome)
        for violation in found:
            self.add(violation, outcome)
        return found

    def add(self, violation: Violation, outcome: Outcome) -> None:
        self.violations.append((violation, describe(outcome), describe(outcome, limit=4000)))

    def grouped(self, start: int = 0) -> dict[str, list[tuple[Violation, str, str]]]:
        groups: dict[str, list[tuple[Violation, str, str]]] = defaultdict(list)
        for item in self.violations[start:]:
            groups[item[0].key].append(item)
        return dict(sorted(groups.items()))

    def report(self, start: int = 0) -> str:
        lines = []
        for key, items in self.grouped(start).items():
            violation, run, _ = items[0]
            detail = violation.detail if len(violation.detail) < 900 else "..." + violation.detail[-900:]
            lines += [f"{key}  ({len(items)} runs), e.g.:", f"    {run}", textwrap.indent(detail, "    | ")]
        return "\n".join(lines)

    def summary(self) -> dict:
        return {
            "schema": "cordee.fuzzsummary/1",
            "runs": dict(sorted(self.runs.items())),
            "seconds": {verb: round(s, 1) for verb, s in sorted(self.seconds.items())},
            "violations": {
                key: {
                    "runs": len(items),
                    "examples": [full for _, _, full in items[:3]],
                    "detail": items[0][0].detail,
                }
                for key, items in self.grouped().items()
            },
        }

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.summary(), indent=2) + "\n")


JOURNAL = Journal()


def assert_contract(outcome: Outcome) -> Outcome:
    start = len(JOURNAL.violations)
    if JOURNAL.record(outcome):
        raise AssertionError("CLI contract broken:\n" + JOURNAL.report(start))
    return outcome
