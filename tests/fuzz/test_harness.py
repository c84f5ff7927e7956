"""The harness catches what it is there to catch: a stand-in for cordee (a real Python process)
breaks one clause of the contract at a time, and the check must name exactly that clause."""

from __future__ import annotations

import sys

import pytest

from fuzz.contract import check
from fuzz.runner import Command, run

PYTHON = (sys.executable, "-c")
TWO_LINES = "import sys; print('a', file=sys.stderr); print('b', file=sys.stderr); sys.exit(2)"
ESCAPE = "import sys; print('bad \\x1b[2J', file=sys.stderr); sys.exit(2)"
ORPHAN = "import subprocess; subprocess.Popen(['sleep', '30'], start_new_session=True)"
BREAKS = {  # case: (stand-in script, arguments, the violation expected)
    "nothing": ("print('ok')", (), None),
    "exit code": ("import sys; sys.exit(7)", (), "exit code"),
    "traceback": ("raise ValueError('boom')", (), "traceback"),
    "error lines": (TWO_LINES, (), "error lines"),
    "control characters": (ESCAPE, (), "control characters"),
    "json": ("print('not json')", ("--json",), "json"),
    "hang": ("import time; time.sleep(60)", (), "hang"),
    "leftover process": (ORPHAN, (), "leftover process"),
    "leftover temp file": ("import tempfile; tempfile.mkstemp()", (), "leftover temp file"),
    "wrote outside": ("import os; os.unlink('outside/victim.txt')", (), "wrote outside"),
    "wrote in the sandbox": ("open('new-file', 'w').write('x')", (), "wrote outside"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_clause_is_caught(case):
    script, args, expected = BREAKS[case]
    outcome = run(Command("stand-in", args, deadline=3), program=(*PYTHON, script))
    kinds = [v.kind for v in check(outcome)]
    assert kinds == ([expected] if expected else []), (kinds, outcome.stderr[-500:])


def test_what_the_verb_may_write_is_allowed():
    script = "import os; os.makedirs('out/a'); open('out/a/f', 'w').write('x')"
    outcome = run(Command("stand-in", (), may_write=("out/a",)), program=(*PYTHON, script))
    assert check(outcome) == []


def test_a_hung_run_is_stopped_with_its_stack():
    script = "import os; os.open('fifo', os.O_RDONLY)"  # blocks: no writer ever comes
    outcome = run(Command("stand-in", (), deadline=2), program=(*PYTHON, script))
    assert outcome.hung and 'File "<string>", line 1' in outcome.stderr
