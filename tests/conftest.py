"""Shared fixtures. Vectors and the Thor REST contract come from ../shared (beside the project);
a test that needs them and cannot find them fails, it never skips."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "vectors").is_dir():
        pytest.fail(
            f"test vectors not found at {SHARED}/vectors: check out shared/ beside the project"
        )
    return SHARED


@pytest.fixture(scope="session")
def vectors_dir(shared_dir: Path) -> Path:
    return shared_dir / "vectors"
