"""A log written before entries were bounded may hold an entry longer than the 65,535 bytes a
tlog-tiles entry bundle can hold. Such an entry can never be tiled: the collector says so once,
naming the entry's index and size and what still works, instead of the full-disk advice it
gave every 30 s, and does not retry; ingestion and checkpoints go on.

A real collector (its database, evidence log, log key, tiles directory); the old log is made
by appending with the bound the log store had before (1 MiB), as such a log was written."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import anchor.logstore
from anchor.tiles import published_size
from collector.influx import make_writer
from collector.service import Collector
from collector.store import AcceptedRow
from fieldproof.config import CollectorConfig
from fieldproof.formats.tiles import MAX_ENTRY_BYTES

GW = "gw-0011223344556677"


def _commit(c: Collector, first_seq: int, entries: list[bytes]) -> None:
    rows = [AcceptedRow(GW, first_seq + i, 1, 1, e) for i, e in enumerate(entries)]
    c.store.commit(rows, [], {"accepted": len(rows)})


def _checkpoint_and_publish(c: Collector) -> int:
    cp = c.evidence.checkpoint()
    assert cp is not None
    c.publish_tiles(cp)
    return cp.checkpoint.size


def test_an_entry_no_tile_can_hold_is_named_once_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = CollectorConfig(collector_id="c-untileable", data_dir=tmp_path)
    c = Collector(config, writer=make_writer(config.influx))
    try:
        _commit(c, 1, [b"\xd2" + bytes([i]) * 100 for i in range(3)])
        published = _checkpoint_and_publish(c)
        assert published_size(c.tiles_dir) == published == 4  # three messages and a seal

        # as an older collector logged it: the store's bound was 1 MiB then
        too_long = b"\xd2" + b"\x07" * MAX_ENTRY_BYTES
        with monkeypatch.context() as m:
            m.setattr(anchor.logstore, "MAX_ENTRY_SIZE", 1 << 20)
            _commit(c, 4, [b"\xd2" + b"\x05" * 100, too_long])
        index = published + 1
        assert c.evidence.log.entry(index) == too_long

        with caplog.at_level(logging.INFO, logger="fieldproof.collector"):
            size = _checkpoint_and_publish(c)
            # ingestion and checkpoints go on; no later size is tried again
            _commit(c, 6, [b"\xd2" + b"\x06" * 100])
            c.maybe_checkpoint(force=True)
            later = c.evidence.latest()
            assert later is not None and later.checkpoint.size > size
        said = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1, [r.getMessage() for r in said]
        text = said[0].getMessage()
        assert said[0].levelno == logging.ERROR
        assert f"cannot go past size {published}: log entry #{index} is 65536 bytes" in text
        assert "at most 65535" in text and "'fieldproof export' bundles" in text
        assert "free disk space" not in text
        assert published_size(c.tiles_dir) == published
        assert c._tiles_retry_at == float("inf")  # the entry stays: trying again cannot help
    finally:
        c.stop_witnesses()
        c.writer.close()
        c.agronomy.close()
        c.db.close()


def test_a_failure_to_write_is_still_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The other failures stay what they were: said once, retried at the next pass (here the
    tiles directory is a file, as a disk that refuses the write would)."""
    config = CollectorConfig(collector_id="c-untileable", data_dir=tmp_path)
    c = Collector(config, writer=make_writer(config.influx))
    try:
        c.tiles_dir.write_bytes(b"not a directory")
        _commit(c, 1, [b"\xd2" + b"\x01" * 100])
        with caplog.at_level(logging.INFO, logger="fieldproof.collector"):
            _checkpoint_and_publish(c)
            assert "free disk space" in caplog.text
            assert c._tiles_retry_at < float("inf")
            c.tiles_dir.unlink()
            c._tiles_retry_at = 0.0  # the retry is due (30 s later)
            c.maybe_checkpoint()
        assert published_size(c.tiles_dir) == 2
        assert "are current again" in caplog.text
    finally:
        c.stop_witnesses()
        c.writer.close()
        c.agronomy.close()
        c.db.close()
