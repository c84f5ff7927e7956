"""images/README.md's field tables say what the schema says: the same fields, in the same order, with
the same type and default (cordee.images.spec.reference derives them), and no field table the
schema does not back. The meaning column is the README's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cordee.images.spec import reference, schema
from cordee.images.spec.fields import Bool, Struct

README = Path(__file__).resolve().parents[1] / "images" / "README.md"
HEADER = "| field | type | default | meaning |"
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def readme_tables(text: str) -> dict[str, list[reference.Row]]:
    """Heading -> the rows of the field table (HEADER) under it, default cells without their remark
    in parentheses ("`null` (required with `hook`)" -> "`null`")."""
    tables: dict[str, list[reference.Row]] = {}
    heading, rows = None, None
    for line in text.splitlines():
        if line.startswith("#"):
            heading, rows = line, None
        elif line == HEADER:
            assert heading not in tables, f"two field tables under {heading!r}"
            rows = tables.setdefault(heading, [])
        elif rows is not None and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line.strip()[1:-1])]
            assert len(cells) == 4 and cells[0].startswith("`") and cells[0].endswith("`"), line
            rows.append(reference.Row(cells[0][1:-1], cells[1], cells[2].split(" (")[0]))
        elif not line.startswith("|"):
            rows = None
    return tables


def mismatches(expected: dict[str, list[reference.Row]], readme: dict[str, list[reference.Row]]) -> list[str]:
    problems = [f"{h}: a field table the schema does not back" for h in readme if h not in expected]
    for heading, rows in expected.items():
        got = readme.get(heading)
        if got is None:
            problems.append(f"{heading}: no field table under this heading")
            continue
        want = {r.field: r for r in rows}
        have = {r.field: r for r in got}
        problems += [
            f"{heading}: missing row {reference.markdown(r)}" for f, r in want.items() if f not in have
        ]
        problems += [f"{heading}: {f!r} is not a field of the schema" for f in have if f not in want]
        problems += [
            f"{heading}: {f!r} is {have[f].type} / {have[f].default}; the schema says {r.type} / {r.default}"
            for f, r in want.items()
            if f in have and have[f] != r
        ]
        if not problems and [r.field for r in got] != [r.field for r in rows]:
            problems.append(f"{heading}: rows out of the schema's order: {[r.field for r in rows]}")
    return problems


def test_readme_field_tables_match_the_schema():
    problems = mismatches(reference.tables(), readme_tables(README.read_text()))
    assert not problems, "\n".join(problems)


@pytest.fixture
def extra_field(monkeypatch):
    """A field added to the schema only (python.pip_extra_args), as a change that forgot the README."""
    python = schema.CONTAINER.fields["python"][0]
    grown = Struct({**python.fields, "pip_extra_args": (Bool(), False)}, python.post)
    monkeypatch.setitem(schema.CONTAINER.fields, "python", (grown, {}))


def test_a_field_missing_from_the_readme_is_found(extra_field):
    problems = mismatches(reference.tables(), readme_tables(README.read_text()))
    assert problems == [
        "## Container specs (`kind: container`): missing row | `python.pip_extra_args` | bool | `false` |"
    ]


def test_a_readme_row_the_schema_lacks_or_describes_otherwise_is_found():
    text = README.read_text()
    row = "| `edf.entrypoint` | bool | `false` | EDF `entrypoint` |"
    assert row in text
    text = text.replace(row, f"{row}\n| `edf.hostname` | text | `null` | made up |")
    text = text.replace(
        "| `python.install_cordee` | bool | `true` |", "| `python.install_cordee` | bool | `false` |"
    )
    assert mismatches(reference.tables(), readme_tables(text)) == [
        "## Container specs (`kind: container`): 'edf.hostname' is not a field of the schema",
        "## Container specs (`kind: container`): 'python.install_cordee' is bool / `false`; "
        "the schema says bool / `true`",
    ]
