"""docs/threat-model.md names, in every row, the tests that prove its defence: each must exist,
so a renamed or deleted test cannot leave the page claiming a proof that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DOC = PROJECT / "docs" / "threat-model.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    }


def test_every_row_names_tests_that_exist() -> None:
    rows = [ln for ln in DOC.read_text().splitlines() if ln.startswith("| ") and "---" not in ln]
    table_rows = [r for r in rows if r.count("|") >= 5 and not r.startswith("| asset ")]
    proving = [r for r in table_rows if "`tests/" in r]
    actors = [r for r in rows if r.startswith("| **")]
    assert len(actors) == 6 and len(proving) >= 40
    for row in proving:
        assert REF.search(row.rsplit("|", 2)[-2]), f"no test in the last column: {row[:80]}"
    missing = []
    for file, test in REF.findall(DOC.read_text()):
        path = PROJECT / file
        if not path.is_file() or test not in _tests_in(path):
            missing.append(f"{file}::{test}")
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"


def test_the_check_finds_a_missing_test() -> None:
    """The guard itself: a name that is not a test function is not found."""
    assert "test_every_row_names_tests_that_exist" in _tests_in(Path(__file__))
    assert "_tests_in" not in _tests_in(Path(__file__))
