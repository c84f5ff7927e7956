"""How test_fuzz_cli.py runs a verb many times: the hypothesis profiles ("cordee-fuzz-ci" by
default, "cordee-fuzz-long" with CORDEE_FUZZ=long: twelve times the examples), the decorator that
makes a @given body a test failing with every violation its runs showed, and small strategies for
command-line options.

Shrinking is off: a hang costs the whole deadline each time it is tried again, and the root-cause
keys already group the runs; tests/test_bad_input.py holds the minimal cases.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from fuzz.journal import JOURNAL
from fuzz.runner import Command, Outcome, run

_COMMON = dict(deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
               suppress_health_check=list(HealthCheck))  # fmt: skip
settings.register_profile("cordee-fuzz-ci", derandomize=True, **_COMMON)
settings.register_profile("cordee-fuzz-long", print_blob=True, **_COMMON)
LONG = os.environ.get("CORDEE_FUZZ") == "long"
PROFILE = settings.get_profile("cordee-fuzz-long" if LONG else "cordee-fuzz-ci")
SCALE = 12 if LONG else 1


def contract(examples: int):
    """Turn a @given body into a test that runs it `examples` times (x SCALE) and fails at the
    end with every contract violation its runs showed."""

    def decorate(body):
        runs = settings(PROFILE, max_examples=examples * SCALE)(body)

        def test() -> None:
            start = len(JOURNAL.violations)
            runs()
            if len(JOURNAL.violations) > start:
                pytest.fail("CLI contract broken:\n" + JOURNAL.report(start), pytrace=False)

        test.__name__ = test.__qualname__ = body.__name__
        test.__doc__ = body.__doc__
        return test

    return decorate


def fuzz(command: Command) -> Outcome:
    """Run `command` in a fresh sandbox and record it."""
    outcome = run(command)
    JOURNAL.record(outcome)
    return outcome


def flag(name: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[], [name]])


def option(name: str, value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), value.map(lambda v: [name, v]), st.just([name]))
