"""Every kind of log entry fits a tlog-tiles entry bundle (16-bit length, at most 65,535
bytes). The log itself refuses a longer entry, before anything is written, so a caller that
lets one through (a bug, a new entry kind) gets an error at once instead of a log whose public
tiles stop for good at that entry. On a real collector database and log key; the tiles are
read back and checked by the inspector's mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from anchor.logstore import MAX_ENTRY_SIZE, LogError
from anchor.tiles import published_size, write_tiles
from collector.registry import Registry, RegistryError
from collector.store import AcceptedRow, CollectorStore
from fieldproof.datadir import open_db
from fieldproof.formats.registry_event import registry_event
from fieldproof.formats.seal import MAX_SEAL_BYTES, Seal, decode_seal
from fieldproof.formats.tiles import MAX_ENTRY_BYTES
from fieldproof.wire import gateway_id_for, public_key_bytes
from inspector.mirror import DirectorySource, mirror_once

ORIGIN = "fieldproof.test/log/entry-limit"
GW = "gw-0011223344556677"


def _open(tmp_path: Path) -> tuple[EvidenceLog, CollectorStore, Registry]:
    db = open_db(tmp_path / "collector.sqlite")
    evidence = EvidenceLog.open(db, ORIGIN, tmp_path / "log.key")
    return evidence, CollectorStore(db, evidence), Registry(db, evidence)


def test_the_log_refuses_an_entry_no_tile_can_hold_and_publishing_goes_on(
    tmp_path: Path,
) -> None:
    assert MAX_ENTRY_SIZE == MAX_ENTRY_BYTES == 65_535
    evidence, store, _ = _open(tmp_path)
    fits = b"\xd2" + b"\x01" * (MAX_ENTRY_SIZE - 1)
    too_long = b"\xd2" + b"\x02" * MAX_ENTRY_SIZE
    store.commit([AcceptedRow(GW, 1, 1, 1, fits)], [], {"accepted": 1})

    # in the collector's own commit: the whole batch is refused, nothing of it is written
    with pytest.raises(LogError, match=r"#1 of this append is 65536 bytes; .* at most 65535"):
        store.commit(
            [AcceptedRow(GW, 2, 1, 1, b"\xd2\x00"), AcceptedRow(GW, 3, 1, 1, too_long)],
            [],
            {"accepted": 2},
        )
    assert evidence.log.size() == 1
    assert store.accepted_count() == (1, 1)
    assert store.counters()["accepted"] == 1

    cp = evidence.checkpoint()
    assert cp is not None
    tiles = tmp_path / "tiles"
    write_tiles(evidence.log, cp.checkpoint.size, cp.note, tiles)
    assert published_size(tiles) == cp.checkpoint.size == 2
    got = mirror_once(DirectorySource(tiles), tmp_path / "mirror", evidence.verifier(),
                      entries=True)  # fmt: skip
    assert got.size == 2 and got.fetched > 0
    evidence.db.close()


def test_a_registry_event_too_long_to_log_registers_nothing(tmp_path: Path) -> None:
    """Enrollment builds its own entry (it carries the signed request); if one were ever too
    long, the device must not be registered without its event in the log."""
    evidence, _, registry = _open(tmp_path)
    key = Ed25519PrivateKey.generate()
    pk = public_key_bytes(key)
    gw = gateway_id_for(pk)
    entry = registry_event("enroll", gw, public_key=pk, farm="f", field="n", location="-")
    padded = entry + b"\x00" * (MAX_ENTRY_SIZE + 1 - len(entry))
    with pytest.raises(LogError, match="65536 bytes"):
        registry.enroll_device(gw, pk, "f", "n", "-", padded)
    assert registry.get(gw) is None and evidence.log.size() == 0
    registry.enroll_device(gw, pk, "f", "n", "-", entry)
    assert registry.get(gw) is not None and evidence.log.size() == 1
    with pytest.raises(RegistryError, match="already registered"):
        registry.enroll_device(gw, pk, "f", "n", "-", entry)
    evidence.db.close()


def test_a_seal_does_not_grow_with_the_farms(tmp_path: Path) -> None:
    """A seal holds counts and the root of its farm records (the records stay in the database):
    its entry has a fixed shape, at most 90 bytes whatever the farm count."""
    widest = Seal(2**63 - 1, 2**63 - 1, b"\xff" * 32).encode()
    assert len(widest) <= MAX_SEAL_BYTES < MAX_ENTRY_BYTES
    evidence, _, registry = _open(tmp_path)
    sizes = {}
    for farms in (1, 300):
        while len({d.farm for d in registry.all()}) < farms:
            key = Ed25519PrivateKey.generate()
            pk = public_key_bytes(key)
            registry.add(gateway_id_for(pk), pk, f"farm-{len(registry.all()):04d}", "north")
        cp = evidence.checkpoint()
        assert cp is not None
        seal = evidence.log.entry(cp.checkpoint.size - 1)
        assert decode_seal(seal).farms == farms
        sizes[farms] = len(seal)
    # only the integers grow: log size and farm count, each from a 1-byte to a 3-byte item
    assert sizes[300] - sizes[1] <= 4
    assert max(sizes.values()) <= len(widest)
    evidence.db.close()
