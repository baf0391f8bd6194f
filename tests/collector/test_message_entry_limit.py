"""A readings message is logged as its exact bytes, and the log is published as C2SP
tlog-tiles, whose entry bundles give an entry a 16-bit length. A 65,536-byte valid signed
message used to pass the collector's 64 KiB limit: it was accepted, receipted and logged, and
from then on no tile could be written (every later checkpoint stayed unpublished, for good,
with a log line blaming the disk). A collector now accepts at most 65,535 bytes.

The real path: messages signed by the gateway's own encoder, the real Ingestor over a real
SQLite store and evidence log, real InfluxDB, then the tiles the collector writes, read back
and checked by the inspector's mirror (signature, root, every entry against its leaf hash)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from anchor.tiles import write_tiles
from collector.influx import V1Writer
from collector.ingest import Incoming, Ingestor
from collector.registry import Registry
from collector.store import CollectorStore
from fieldproof.config import MAX_LOGGABLE_MESSAGE_BYTES, CollectorConfig, InfluxConfig
from fieldproof.datadir import open_db
from fieldproof.errors import ConfigError
from fieldproof.formats.tiles import MAX_ENTRY_BYTES, decode_entry_bundle, entries_path
from fieldproof.services import InfluxDB
from fieldproof.wire import (
    decode_message,
    gateway_id_for,
    public_key_bytes,
)
from inspector.mirror import DirectorySource, mirror_once
from tests.support.messages import signed_message_of_size

ORIGIN = "fieldproof.test/log/entry-limit"
PREFIX = "fieldproof/v1"
@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _points(influx: InfluxDB, database: str, gw: str) -> int:
    r = httpx.get(
        influx.url + "/query",
        params={
            "db": database,
            "q": f"SELECT count(missing) FROM soil_moisture WHERE gateway='{gw}'",
        },
    )
    r.raise_for_status()
    series = r.json()["results"][0].get("series")
    return 0 if not series else int(series[0]["values"][0][1])


def test_the_largest_accepted_message_is_logged_and_tiled_and_a_longer_one_is_oversized(
    tmp_path: Path, influx: InfluxDB
) -> None:
    cfg = CollectorConfig(data_dir=tmp_path)
    assert cfg.max_message_bytes == MAX_LOGGABLE_MESSAGE_BYTES == MAX_ENTRY_BYTES == 65_535
    db = open_db(cfg.db_path)
    evidence = EvidenceLog.open(db, ORIGIN, tmp_path / "log.key")
    registry = Registry(db, evidence)
    store = CollectorStore(db, evidence)
    database = "entry_limit"
    writer = V1Writer(InfluxConfig(url=influx.url, database=database))
    ingestor = Ingestor(store, registry, writer, max_message_bytes=cfg.max_message_bytes)
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"entry-limit").digest())
    gw = gateway_id_for(public_key_bytes(key))
    registry.add(gw, public_key_bytes(key), "farm-a", "north")
    topic = f"{PREFIX}/{gw}/readings"

    largest = signed_message_of_size(key, 1, cfg.max_message_bytes)
    one_more = signed_message_of_size(key, 2, cfg.max_message_bytes + 1)
    huge = signed_message_of_size(key, 3, 200 * 1024)
    assert (len(largest), len(one_more), len(huge)) == (65_535, 65_536, 204_800)

    result = ingestor.process([Incoming(topic, m) for m in (largest, one_more, huge)])
    # the largest is durable and receipted; the others are quarantined, counted and not
    # receipted (process returned: the batch is done, so the service acks all three)
    assert result.accepted == 1
    assert result.quarantined == {"oversized": 2}
    assert result.confirmed == {gw: [1]}
    assert store.counters()["quarantined:oversized"] == 2
    details = sorted(row[4] for row in store.quarantine_rows() if row[3] == "oversized")
    assert details == [
        "204800 bytes; limit 65535 (max_message_bytes)",
        "65536 bytes; limit 65535 (max_message_bytes)",
    ]
    readings = decode_message(largest, public_key_bytes(key)).readings
    assert _points(influx, database, gw) == len(readings)

    entries = evidence.log.entries(0, evidence.log.size())
    assert largest in entries and one_more not in entries and huge not in entries
    assert max(len(e) for e in entries) == 65_535

    cp = evidence.checkpoint()
    assert cp is not None
    tiles = tmp_path / "tiles"
    assert write_tiles(evidence.log, cp.checkpoint.size, cp.note, tiles) > 0

    # read back as an inspector does: signature, root from the hash tiles, every entry bundle
    # checked against its leaf hashes
    mirror = tmp_path / "mirror"
    got = mirror_once(DirectorySource(tiles), mirror, evidence.verifier(), entries=True)
    assert got.size == cp.checkpoint.size
    bundle = (mirror / entries_path(0, got.size)).read_bytes()
    seal = evidence.log.entry(got.size - 1)  # the checkpoint ends with a seal
    assert decode_entry_bundle(bundle, got.size) == [*entries, seal]
    db.close()


def test_the_ingestor_refuses_a_limit_whose_messages_could_not_be_logged(tmp_path: Path) -> None:
    db = open_db(tmp_path / "collector.sqlite")
    evidence = EvidenceLog.open(db, ORIGIN, tmp_path / "log.key")
    registry = Registry(db, evidence)
    store = CollectorStore(db, evidence)
    writer = V1Writer(InfluxConfig())  # never written to: construction is what is tested
    for bad in (MAX_LOGGABLE_MESSAGE_BYTES + 1, 200 * 1024, 1024 * 1024, 0):
        with pytest.raises(ConfigError, match=rf"max_message_bytes = {bad}: must be 1 to 65535"):
            Ingestor(store, registry, writer, max_message_bytes=bad)
    assert Ingestor(store, registry, writer).max_message_bytes == MAX_LOGGABLE_MESSAGE_BYTES
    writer.close()
    db.close()
