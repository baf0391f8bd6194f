"""Issue 17's contract on a real run: gateways → Mosquitto → a collector process; the collector
keeps its log's public tiles under ``<data_dir>/tiles`` (C2SP tlog-tiles), signed by the key
the exported bundles name; an independent reader rebuilds the checkpoint's root from the hash
tiles, and a mirror follows the log across a collector restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anchor.evidence import EvidenceLog
from anchor.logkey import load_or_create_log_key
from fieldproof.config import load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.checkpoint import open_checkpoint
from fieldproof.formats.tiles import TileHashes, tile_path
from inspector.mirror import DirectorySource, mirror_once
from tests.support.stack import Stack, started_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with started_stack(tmp_path) as s:
        yield s


def test_collector_publishes_tiles_a_mirror_can_follow(stack: Stack, tmp_path: Path) -> None:
    cfg = load_collector_config(stack.collector_config)
    tiles = cfg.data_dir / "tiles"
    gateways = [stack.add_gateway(interval=0.1) for _ in range(2)]
    stack.start_collector()
    for g in gateways:
        stack.start_gateway(g)
    wait_until(lambda: stack.accepted_readings() > 40, 60, "readings to be accepted")
    stack.stop_gateways()
    stack.wait_caught_up()
    stack.stop_collector()  # signs a last checkpoint and brings the tiles to it

    db = open_db(stack.db_path)
    try:
        evidence = EvidenceLog.open(db, cfg.log_origin, key_file=None)
        latest = evidence.latest()
        assert latest is not None
        size, log_root = latest.checkpoint.size, evidence.log.root(latest.checkpoint.size)
    finally:
        db.close()
    verifier = load_or_create_log_key(cfg.log_key_file, cfg.log_origin).verifier()
    cp = open_checkpoint((tiles / "checkpoint").read_bytes(), verifier, origin=cfg.log_origin)
    assert cp.size == size and cp.root_hash == log_root
    th = TileHashes(size, lambda t: (tiles / tile_path(*t)).read_bytes())
    assert th.root() == cp.root_hash and list(th.check_full_tiles()) == []

    mirror = tmp_path / "mirror"
    first = mirror_once(DirectorySource(tiles), mirror, verifier, entries=True)
    assert first.size == size

    # the collector comes back, more readings arrive: the mirror follows
    stack.start_collector()
    for g in gateways:
        stack.start_gateway(g)
    wait_until(lambda: stack.accepted_readings() > 80, 60, "more readings")
    stack.stop_gateways()
    stack.wait_caught_up()
    stack.stop_collector()
    second = mirror_once(DirectorySource(tiles), mirror, verifier, entries=True)
    assert second.size > first.size and second.previous_size == first.size
