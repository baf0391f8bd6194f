"""The anchorer's test rig, shared by its tests on the real thor solo node
(tests/integration/test_anchoring_real.py) and on the node double (tests/anchor/test_anchoring.py)
and by the anchor service's tests: a checkpoint source the test sets, an injected clock, the
anchorer built from them, and a real collector configuration whose log grows on demand.

The fixtures ``store``, ``log`` and ``clock`` are bound by name in the modules that use them."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from anchor import thor
from anchor.anchoring import AnchorConfig, Anchorer, AnchorStore, StepReport
from anchor.devchain import DevChain
from anchor.evidence import EvidenceLog, StoredCheckpoint
from anchor.thor_client import ThorClient
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from tests.support.bundles import Farm, evm_anchor

ORIGIN = "farm.example/fieldproof/log"
#: the injected clock's start: any fixed instant, far from 0 so "now - interval" stays positive
CLOCK_START = 1_000_000.0


@dataclass(frozen=True)
class Checkpoint:
    """Same shape as fieldproof.formats.checkpoint.Checkpoint (written elsewhere)."""

    origin: str
    size: int
    root_hash: bytes


class Log:
    """A checkpoint source whose newest checkpoint the test sets. Roots are random, so tests
    sharing one real node never anchor the same record twice."""

    def __init__(self, size: int = 0) -> None:
        """``size``: a checkpoint of that size is already published."""
        self.latest: tuple[Checkpoint, bytes] | None = None
        if size:
            self.publish(size)

    def publish(self, size: int, root: bytes | None = None) -> Checkpoint:
        cp = Checkpoint(ORIGIN, size, root or secrets.token_bytes(32))
        self.latest = (cp, f"{ORIGIN}\n{size}\n...signed note...\n".encode())
        return cp

    def latest_checkpoint(self) -> tuple[Checkpoint, bytes] | None:
        return self.latest


class Clock:
    """The anchorer's clock: it moves only when the test sets ``now`` (backoff, intervals)."""

    def __init__(self) -> None:
        self.now = CLOCK_START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AnchorStore]:
    with AnchorStore(tmp_path / "anchors.db") as s:
        yield s


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_anchorer(
    store: AnchorStore,
    client: ThorClient,
    log: Log,
    clock: Clock,
    *,
    key: thor.SecretKey,
    sponsor: thor.SecretKey | None = None,
    **config: Any,
) -> Anchorer:
    """An anchorer on ``store`` and ``client`` with ``config`` as AnchorConfig fields."""
    return Anchorer(
        store, client, log, key, sponsor=sponsor, config=AnchorConfig(**config), clock=clock
    )


def ok(report: StepReport) -> StepReport:
    """``report``, once it says the node answered and nothing went wrong."""
    assert report.node_ok, report
    assert not report.errors, report
    return report


# ---------------------------------------------------------------- a real collector's log


def collector_config(tmp_path: Path, key_hex: str, anchor_toml: str) -> Path:
    """A collector.toml in ``tmp_path`` anchoring with the key ``key_hex`` every 0.1 s;
    ``anchor_toml`` adds the chain's lines to its [anchor] table."""
    key_file = tmp_path / "anchor.key"
    key_file.write_text(key_hex + "\n")
    key_file.chmod(0o600)
    cfg = tmp_path / "collector.toml"
    cfg.write_text(
        f'collector_id = "c1"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[anchor]\nkey_file = "{key_file}"\ninterval_s = 0.1\n{anchor_toml}'
    )
    return cfg


def grow_log(cfg_path: Path, entries: int) -> int:
    """Append entries and sign a checkpoint, as the collector does; returns its size."""
    cfg = load_collector_config(cfg_path)
    db = open_db(cfg.db_path)
    ev = EvidenceLog.open(db, cfg.log_origin, cfg.log_key_file)
    with db:
        ev.append([os.urandom(40) for _ in range(entries)])
    cp = ev.checkpoint()
    db.close()
    assert cp is not None
    return cp.checkpoint.size


def forged_checkpoint(config: CollectorConfig, where: Path, size: int) -> EvidenceLog:
    """A second log in ``where`` under ``config``'s log key and origin, other entries, signed
    at ``size`` entries: what an operator who rewrote history and re-signed it would hold."""
    where.mkdir()
    shutil.copy(config.log_key_file, where / "log.key")
    (where / "log.key").chmod(0o600)
    ev = EvidenceLog.open(open_db(where / "collector.sqlite"), config.log_origin, where / "log.key")
    while (latest := ev.latest()) is None or latest.checkpoint.size < size:
        with ev.db:  # a checkpoint appends a seal: one entry fewer lands on the size
            ev.append([b"forged"] * max(1, size - ev.log.size() - 1))
        ev.checkpoint()
    assert latest.checkpoint.size == size
    return ev


def anchor_on_evm(farm: Farm, chain: DevChain, t0: float, readings: int) -> StoredCheckpoint:
    """One gateway's ``readings`` from ``t0`` into ``farm``, a checkpoint, and that checkpoint
    anchored on the anvil chain until final; returns the checkpoint."""
    g = farm.enroll()
    farm.run(g, t0, readings)
    farm.checkpoint()
    latest = farm.evidence.latest()
    assert latest is not None
    evm_anchor(farm.root / "anchors-evm.sqlite", latest.checkpoint, chain)
    return latest
