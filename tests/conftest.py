"""Shared fixtures. Vectors and the Thor REST contract come from ../shared (beside the project);
a test that needs them and cannot find them fails, it never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: under parallel workers on a shared machine an example's wall time
# says nothing about the code (the rules put speed in benchmarks/); a test's own settings win.
settings.register_profile("fieldproof", deadline=None)
settings.load_profile("fieldproof")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"

#: workers for ``-n auto``: the tests mostly wait on real services, but each worker starts its
#: own, so more workers than this only add start-ups and memory on a bigger machine
MAX_AUTO_WORKERS = 4


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (scripts/test): one worker per usable core, at most MAX_AUTO_WORKERS;
    PYTEST_XDIST_AUTO_NUM_WORKERS still overrides (None leaves it to xdist)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, hand out the files that start real services (tests/integration, or marked
    integration: the long ones) first, so the last files a worker takes are short and no worker
    idles at the end (pyproject.toml turns off xdist's own order, most tests first). Each file
    keeps its order, and a serial run keeps the collection order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow_files = {
        item.path
        for item in items
        if "integration" in item.path.parts or item.get_closest_marker("integration")
    }
    items.sort(key=lambda item: item.path not in slow_files)  # stable: files stay in order


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
