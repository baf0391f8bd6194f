"""The seal writer (anchor/evidence.py, docs/evidence-log.md §11) on a log from before seals:
its bundles still verify (completeness not provable), the first checkpoint after the upgrade
seals the whole older log, and a seal state that moved while the next one was prepared is not
trusted."""

from __future__ import annotations

import time
from pathlib import Path

from anchor.logstore import SqliteLogStore
from collector.export import build_bundle, export_bundle
from fieldproof.formats.bundle import encode_bundle
from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint
from fieldproof.formats.seal import SealAccumulator, decode_seal
from inspector.verify import verify_bundle
from tests.support.bundles import Farm

T0 = 1_750_000_000.0


def _old_checkpoint(f: Farm) -> int:
    """A checkpoint as a collector from before seals signed it: no seal at its end."""
    ev = f.evidence
    assert ev.signer is not None
    size = ev.log.size()
    cp = Checkpoint(ev.origin, size, ev.log.root(size))
    with f.db:
        f.db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
                     (size, cp.root_hash, sign_checkpoint(cp, ev.signer), time.time()))
    return size


def test_an_older_log_stays_readable_and_is_sealed_from_then_on(tmp_path: Path) -> None:
    f = Farm(tmp_path)
    g = f.enroll("farm-a", "x")
    f.run(g, T0, 10)
    old = _old_checkpoint(f)
    b, _ = build_bundle(f.config, farm="farm-a", field=None, gateway=None, start=T0,
                        end=T0 + 300)
    assert b.seal is None and any("completeness seal" in n for n in b.notes)
    r = verify_bundle(encode_bundle(b), nodes=[], chain=None, offline=True, log_key=f.vkey,
                      now=T0 + 3600)
    assert r.codes("error") == set() and "completeness_not_provable" in r.codes("warning")

    f.run(g, T0 + 600, 3)
    size = f.checkpoint()
    seal = decode_seal(f.evidence.log.entry(size - 1))
    assert seal.size == size - 1 == old + 3
    # what it states is what the whole older log implies, not only the entries since
    acc = SealAccumulator()
    acc.add(f.evidence.log.entries(0, size - 1))
    assert acc.seal()[0] == seal
    r = verify_bundle(export_bundle(f.config, farm="farm-a", field=None, gateway=None,
                                    start=T0, end=T0 + 300),
                      nodes=[], chain=None, offline=True, log_key=f.vkey, now=T0 + 3600)
    assert r.seal is not None and r.seal["status"] == "sealed", [x.message for x in r.findings]
    f.close()


def test_a_state_that_moved_meanwhile_is_not_used(tmp_path: Path) -> None:
    """The entries since the last seal are folded before the write lock is taken; if the
    committed state changed by then, the writer starts again from what is committed."""
    f = Farm(tmp_path)
    g = f.enroll("farm-a", "x")
    f.run(g, T0, 5)
    f.checkpoint()
    f.run(g, T0 + 300, 5)
    ev = f.evidence
    stale, head = ev._seal_state()
    assert head is not None
    stale.gateways.clear()  # what a fold from a state that is no longer committed could hold
    ev.db.execute("BEGIN IMMEDIATE")
    size = ev._append_seal(ev.log.size(), (stale, (head[0], b"\x00" * 32)))
    ev.db.commit()
    acc = SealAccumulator()
    acc.add(ev.log.entries(0, size - 1))
    assert decode_seal(ev.log.entry(size - 1)) == acc.seal()[0]
    f.close()


def test_a_log_rewritten_behind_the_seal_state_is_sealed_from_its_entries(
        tmp_path: Path) -> None:
    """An operator who deletes an entry and rebuilds the tree (the attack the consistency
    proofs catch) still gets a seal of what the rewritten log holds, not of the old state."""
    f = Farm(tmp_path)
    g = f.enroll("farm-a", "x")
    f.run(g, T0, 6)
    f.checkpoint()
    entries = f.evidence.log.entries(0, f.evidence.log.size())
    del entries[3]
    with f.db:
        f.db.execute("DELETE FROM fp_log_entries")
        f.db.execute("DELETE FROM fp_log_nodes")
        SqliteLogStore(f.db).append(entries)
        f.db.execute("DELETE FROM checkpoints")
    size = f.checkpoint()
    assert size == len(entries) + 1
    acc = SealAccumulator()
    acc.add(entries)
    assert decode_seal(f.evidence.log.entry(size - 1)) == acc.seal()[0]
    f.close()
