"""The CLI contract, checked on one run (README "Exit codes"; DESIGN.md "Principles"):

- the exit code is 0, 1, 2 or 3, and the command finished before the deadline;
- stderr never holds a Python traceback;
- exit 2 is one line on stderr (a report verb may instead print its report on stdout);
- user values are never echoed raw into error lines or `edf check` findings: no control
  characters there, and every finding is one line;
- `--json` prints one JSON document with a top-level "schema";
- nothing outside what the verb may write is written or deleted, and no process and no file in
  TMPDIR outlives the run.

Each violation carries a key naming its probable root cause (the exception type and the
innermost cordee function of a traceback, the function a hung run was stuck in, ...), so that a
few thousand runs group into a short list.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from fuzz.runner import Outcome

# Line breaks that str.splitlines() and terminals honour, and other C0/C1 controls (tab excepted).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_FRAME = re.compile(r'File "[^"]*/cordee/([^"]+)", line (\d+),? in (\S+)')
_FINDING = re.compile(r"^.+: (error|warning): .+$")
EXIT_CODES = (0, 1, 2, 3)


class Violation(NamedTuple):
    kind: str  # hang, exit code, traceback, error lines, control characters, json, leftover, ...
    key: str  # the probable root cause: violations with one key are one bug
    detail: str


def innermost_frame(text: str, newest_first: bool = False) -> str:
    """'images/spec/load.py:_read_yaml' for the deepest cordee frame of a traceback (oldest frame
    first) or of a faulthandler dump (newest first); '?' when no cordee frame is in it."""
    frames = _FRAME.findall(text)
    if not frames:
        return "?"
    module, _line, func = frames[0] if newest_first else frames[-1]
    return f"{module}:{func}"


def _exception(stderr: str) -> str:
    tail = stderr[stderr.rindex("Traceback") :]
    lines = [line for line in tail.splitlines() if line and not line.startswith((" ", "Traceback"))]
    return lines[-1].split(":", 1)[0] if lines else "?"


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def _error_lines(outcome: Outcome) -> str | None:
    """Exit 2: one line on stderr (or one per spec error where the verb says so), unless a report
    verb printed its report on stdout; None when that holds."""
    cmd, lines = outcome.command, _lines(outcome.stderr)
    if cmd.report_verb and not lines and outcome.stdout.strip():
        return None
    most = cmd.error_lines if cmd.error_lines is not None else max(len(lines), 1)
    if 1 <= len(lines) <= most:
        return None
    return f"{len(lines)} lines" if len(lines) < 3 else "several lines"


def _asks_for_help(outcome: Outcome) -> bool:
    return bool({"--help", "-h", "--version"} & set(_options(outcome.command.args)))


def _options(args) -> list[str]:
    """The arguments before `--`: after it, `--json` is an operand (a host name, a command)."""
    args = list(args)
    return args[: args.index("--")] if "--" in args else args


def _json(outcome: Outcome) -> str | None:
    """`--json` (and exit 0 or 1): one JSON document with a "schema"; None when so."""
    if "--json" not in _options(outcome.command.args) or outcome.returncode not in (0, 1):
        return None
    try:
        doc = json.loads(outcome.stdout)
    except ValueError:
        return "not one JSON document"
    return None if isinstance(doc, dict) and "schema" in doc else "no schema"


def _findings(outcome: Outcome) -> str | None:
    """`edf check` text output: every finding one clean line (the last line is the verdict)."""
    for line in _lines(outcome.stdout)[:-1]:
        if not _FINDING.match(line) or CONTROL.search(line):
            return line
    return None


def check(outcome: Outcome) -> list[Violation]:
    cmd, rc, out, err = outcome.command, outcome.returncode, outcome.stdout, outcome.stderr
    found: list[Violation] = []

    def add(kind: str, cause: str, detail: str) -> None:
        found.append(Violation(kind, f"{cmd.verb}: {kind}: {cause}", detail))

    if outcome.hung:
        stack = err[err.find("most recent call first") :]
        frames = "\n".join([line.strip() for line in stack.splitlines() if "/cordee/" in line][:6])
        where = innermost_frame(stack, newest_first=True)
        add("hang", where, f"still running after {cmd.deadline:g}s, newest frame first:\n{frames}")
    elif rc not in EXIT_CODES:
        add("exit code", str(rc), f"exit code {rc}; stderr: {err[-600:]}")
    elif "Traceback" in err:
        exc = _exception(err)
        add("traceback", f"{exc} in {innermost_frame(err)}", "\n".join(err.rstrip().splitlines()[-8:]))
    else:  # output rules, for a run that ended on its own terms
        if rc == 2 and (problem := _error_lines(outcome)):
            add("error lines", problem, err[-800:])
        if not _asks_for_help(outcome) and (problem := _json(outcome)):
            add("json", problem, out[:300])
        edf_check = (
            cmd.verb.startswith("edf check") and "--json" not in cmd.args and not _asks_for_help(outcome)
        )
        if edf_check and (line := _findings(outcome)):
            add("control characters", "in a finding", f"finding not one clean line: {line[:300]!r}")
        if m := CONTROL.search(err):
            add("control characters", "in stderr", f"{m.group()!r} in stderr: {err[-400:]!r}")
    if outcome.leftovers:
        add("leftover process", outcome.leftovers[0].split(" -m ")[-1][:60], "; ".join(outcome.leftovers))
    if outcome.temp_files:
        pattern = re.sub(r"[0-9a-z_]{6,}", "*", outcome.temp_files[0])
        add("leftover temp file", pattern, str(outcome.temp_files))
    if outcome.changed:
        add("wrote outside", outcome.changed[0][1], str(outcome.changed[:5]))
    return found
