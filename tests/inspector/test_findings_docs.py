"""The finding codes (inspector/findings.py) and the tables of docs/bundle.md that list them
(§7, and §11's for several bundles) are one list: a code added, dropped or re-graded on one
side only fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from inspector.findings import FindingCode, SeverityError
from inspector.results import Findings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bundle.md"
SEVERITIES = ("error", "warning", "info")


def documented() -> dict[str, tuple[str, ...]]:
    """code -> severities (in the order the cell names them) from every table of the doc
    whose header is ``| code | severity | meaning |``."""
    found: dict[str, tuple[str, ...]] = {}
    in_table = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") \
            else []
        if cells[:3] == ["code", "severity", "meaning"]:
            in_table = True
            continue
        if not cells:
            in_table = False
            continue
        if not in_table or set(cells[0]) <= {"-", " "}:
            continue
        codes = re.findall(r"`([a-z_]+)`", cells[0])
        assert codes, f"docs/bundle.md: a findings row names no code: {line}"
        severities = tuple(re.findall(r"\b(error|warning|info)\b", cells[1]))
        assert severities, f"docs/bundle.md: {codes} has no severity: {line}"
        for code in codes:
            assert code not in found, f"docs/bundle.md lists {code} twice"
            found[code] = severities
    return found


def test_the_doc_tables_are_found() -> None:
    docs = documented()
    # both tables: one bundle's (§7) and several bundles' (§11)
    assert "malformed_bundle" in docs and "logged_twice" in docs


def test_every_code_is_documented_and_every_documented_code_exists() -> None:
    docs = documented()
    codes = {c.value for c in FindingCode}
    assert sorted(codes - set(docs)) == [], "codes missing from docs/bundle.md §7"
    assert sorted(set(docs) - codes) == [], "documented codes inspector/findings.py lacks"


@pytest.mark.parametrize("code", list(FindingCode), ids=str)
def test_severity_matches_the_doc(code: FindingCode) -> None:
    assert documented().get(code.value) == code.severities
    assert code.meaning and "\n" not in code.meaning


def test_every_code_the_sources_name_is_a_member() -> None:
    """Every ``FindingCode.X`` the inspector's sources use exists (mypy says it too, but only
    where it runs)."""
    used: set[str] = set()
    for path in (ROOT / "inspector").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "FindingCode":
                used.add(node.attr)
    members = {c.name for c in FindingCode}
    assert used, "no FindingCode.X found: the scan is broken"
    assert sorted(used - members - {"severity", "severities", "meaning"}) == []


def test_a_code_is_reported_only_with_a_severity_it_allows() -> None:
    out = Findings()
    out.add(FindingCode.ANCHORS_NOT_CHECKED, "other chains", severity="info")
    out.add(FindingCode.SEQUENCE_GAP, "a gap")
    assert [(f.severity, f.code) for f in out.items] == [
        ("info", "anchors_not_checked"), ("warning", "sequence_gap")]
    with pytest.raises(SeverityError, match="never reported as info"):
        out.add(FindingCode.BAD_SIGNATURE, "x", severity="info")
