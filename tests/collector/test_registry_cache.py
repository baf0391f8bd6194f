"""The collector's registry cache re-reads only the devices that changed: every write to a
device's rows (add, enroll, revoke, key rotation, any hand-made UPDATE or DELETE) gets a new
change number from the database's triggers, and a refresh reads the numbers above its last.
Changes are made through a second connection, as the operator's CLI (another process) does.
A revocation takes effect at the next refresh; a database from before change numbers is
migrated; a full reload remains the safety net."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.ingest import RegistryCache
from collector.registry import Registry
from fieldproof.datadir import open_db
from fieldproof.wire import gateway_id_for, public_key_bytes

OLD_SCHEMA = """
CREATE TABLE devices (
    gateway TEXT PRIMARY KEY, farm TEXT NOT NULL, field TEXT NOT NULL,
    location TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    added_at REAL NOT NULL, revoked_at REAL, sensor_meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE device_keys (
    gateway TEXT NOT NULL REFERENCES devices(gateway), public_key BLOB NOT NULL,
    valid_from REAL NOT NULL, valid_to REAL, PRIMARY KEY (gateway, public_key)
);
"""


def new_gateway() -> tuple[str, bytes]:
    pub = public_key_bytes(Ed25519PrivateKey.generate())
    return gateway_id_for(pub), pub


def two_connections(tmp_path: Path, n: int = 20) -> tuple[Registry, Registry, list[str]]:
    """The collector's registry and the operator's, on one database, with ``n`` devices."""
    path = tmp_path / "collector.sqlite"
    operator = Registry(open_db(path))
    gateways = []
    for _ in range(n):
        gw, pub = new_gateway()
        operator.add(gw, pub, "farm", "field")
        gateways.append(gw)
    return Registry(open_db(path)), operator, gateways


def test_revocation_by_another_process_takes_effect_at_the_next_refresh(tmp_path: Path) -> None:
    collector, operator, gateways = two_connections(tmp_path)
    cache = RegistryCache(collector, refresh_s=3600)
    victim = gateways[3]
    assert cache.get(victim).active  # type: ignore[union-attr]
    operator.revoke(victim)
    assert cache.get(victim).active  # type: ignore[union-attr]  # cached until the refresh
    cache.refresh()
    assert not cache.get(victim).active  # type: ignore[union-attr]
    # with the interval elapsed (0 s here), get() refreshes by itself
    eager = RegistryCache(collector, refresh_s=0.0)
    other = gateways[4]
    assert eager.get(other).active  # type: ignore[union-attr]
    operator.revoke(other)
    assert not eager.get(other).active  # type: ignore[union-attr]


def test_refresh_reads_only_what_changed_and_keeps_the_rest(tmp_path: Path) -> None:
    collector, operator, gateways = two_connections(tmp_path, 50)
    cache = RegistryCache(collector, refresh_s=3600)
    before = {gw: cache.get(gw) for gw in gateways}
    seen = collector.change_seq()
    assert collector.changes_since(seen) == (seen, [])  # nothing changed: nothing read
    operator.revoke(gateways[0])
    with operator.db:  # sensor tags changed by hand: no Registry method involved
        operator.db.execute(
            "UPDATE devices SET sensor_meta=? WHERE gateway=?",
            ('{"soil1": {"depth_cm": "30"}}', gateways[1]),
        )
    new_seq, changed = collector.changes_since(seen)
    assert sorted(gw for gw, _ in changed) == sorted(gateways[:2])
    assert new_seq > seen
    cache.refresh()
    assert cache.get(gateways[1]).sensor_meta == {"soil1": {"depth_cm": "30"}}  # type: ignore[union-attr]
    # unchanged devices are the very same objects: derived caches keyed on them stay valid
    assert all(cache.get(gw) is before[gw] for gw in gateways[2:])
    assert cache.get(gateways[0]) is not before[gateways[0]]


def test_key_rotation_reaches_the_cache(tmp_path: Path) -> None:
    collector, operator, gateways = two_connections(tmp_path, 3)
    cache = RegistryCache(collector, refresh_s=3600)
    gw = gateways[1]
    old = cache.get(gw).public_key  # type: ignore[union-attr]
    new = public_key_bytes(Ed25519PrivateKey.generate())
    operator.rotate_key(gw, old, new, from_seq=100, entry=b"rotate")
    cache.refresh()
    assert cache.get(gw).public_key == new  # type: ignore[union-attr]


def test_a_deleted_device_leaves_the_cache(tmp_path: Path) -> None:
    collector, operator, gateways = two_connections(tmp_path, 3)
    cache = RegistryCache(collector, refresh_s=3600)
    gone = gateways[2]
    assert cache.get(gone) is not None
    with operator.db:
        operator.db.execute("DELETE FROM device_keys WHERE gateway=?", (gone,))
        operator.db.execute("DELETE FROM devices WHERE gateway=?", (gone,))
    cache.refresh()
    assert cache.get(gone) is None


def test_new_device_is_found_at_once_without_a_refresh(tmp_path: Path) -> None:
    """A miss still asks the database at once (unchanged behaviour of get)."""
    collector, operator, _ = two_connections(tmp_path, 2)
    cache = RegistryCache(collector, refresh_s=3600)
    gw, pub = new_gateway()
    operator.add(gw, pub, "farm", "field")
    assert cache.get(gw) is not None


def test_database_from_before_change_numbers_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    old = [new_gateway() for _ in range(5)]
    with db:
        for gw, pub in old:
            db.execute(
                "INSERT INTO devices VALUES (?, 'farm', 'field', '', 'active', 0, NULL, '{}')",
                (gw,),
            )
            db.execute("INSERT INTO device_keys VALUES (?, ?, 0, NULL)", (gw, pub))
    db.close()

    # read-only users (export, inspector) of a database not migrated yet still work
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert len(Registry(ro).all()) == 5
    ro.close()

    registry = Registry(open_db(path))
    rows = registry.db.execute("SELECT gateway, change_seq FROM device_changes").fetchall()
    assert sorted(gw for gw, _ in rows) == sorted(gw for gw, _ in old)
    assert len({seq for _, seq in rows}) == 5  # each its own number
    top = registry.change_seq()
    Registry(open_db(path))  # opening again numbers nothing twice
    assert registry.change_seq() == top
    cache = RegistryCache(registry, refresh_s=3600)
    # an older collector (no change numbers in its code) revokes: the triggers still count it
    legacy = sqlite3.connect(path)
    with legacy:
        legacy.execute("UPDATE devices SET status='revoked', revoked_at=1 WHERE gateway=?",
                       (old[0][0],))  # fmt: skip
    legacy.close()
    assert registry.change_seq() > top
    cache.refresh()
    assert not cache.get(old[0][0]).active  # type: ignore[union-attr]


def test_full_reload_is_the_safety_net(tmp_path: Path) -> None:
    """A change that got no change number (triggers dropped by hand) is missed by refresh
    and caught by the periodic full reload."""
    collector, operator, gateways = two_connections(tmp_path, 3)
    cache = RegistryCache(collector, refresh_s=3600, full_reload_s=3600)
    with operator.db:
        operator.db.execute("DROP TRIGGER device_changed_update")
        operator.db.execute("UPDATE devices SET status='revoked' WHERE gateway=?", (gateways[0],))
    cache.refresh()
    assert cache.get(gateways[0]).active  # type: ignore[union-attr]  # missed
    cache.full_reload_s = 0.0
    assert not cache.get(gateways[0]).active  # type: ignore[union-attr]
