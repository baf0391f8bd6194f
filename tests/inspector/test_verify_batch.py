"""The verifier's batched message checks (inspector/batch.py).

:class:`ProvenNodes` shares work between inclusion proofs into one checkpoint; it must give
exactly the answer of the full RFC 9162 check (fieldproof.formats.merkle.verify_inclusion over
the proof the bundle's subtree table yields) for every leaf, in any order, whatever the table
holds — including tables with a wrong, missing or extra hash, where a shortcut that remembered too
much would accept a leaf the full check refuses. The reference is the RFC vectors' own
implementation in fieldproof.formats.merkle, itself proven on ../shared/vectors/merkle.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldproof.formats import merkle
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes
from inspector.batch import (
    BAD_SIGNATURE,
    NOT_A_MESSAGE,
    OK,
    UNKNOWN_KEY,
    Context,
    KeyEvent,
    ProvenNodes,
    check_messages,
    inclusion_problem,
    key_at,
)


def _tree(n: int, seed: int = 0) -> tuple[list[bytes], bytes, dict[tuple[int, int], bytes]]:
    """n entries, the root, and the subtree table an exporter would send for all of them."""
    entries = [hashlib.sha256(f"{seed}/{i}".encode()).digest() + bytes([i % 251])
               for i in range(n)]
    root = merkle.root_from_leaves(entries)
    leaves = [merkle.leaf_hash(e) for e in entries]
    table = {}
    for i in range(n):
        for b, e in merkle.inclusion_proof_ranges(i, n):
            table[(b, e)] = merkle.root_from_leaf_hashes(leaves[b:e])
    return entries, root, table


def _reference(entries: list[bytes], root: bytes, table: dict[tuple[int, int], bytes],
               i: int, data: bytes) -> bool:
    return inclusion_problem(i, data, len(entries), root, table) is None


@pytest.mark.parametrize("n", [*range(1, 34), 63, 64, 65, 100, 129])
def test_every_leaf_of_every_small_tree_is_proven(n: int) -> None:
    entries, root, table = _tree(n)
    proven = ProvenNodes(n, root, table)
    order = list(range(n))
    random.Random(n).shuffle(order)
    for i in order:
        assert proven.check(i, entries[i]) is None
    # and a second pass, now mostly answered from proven nodes, still refuses a wrong leaf
    for i in range(n):
        assert proven.check(i, entries[i]) is None
        assert proven.check(i, entries[i] + b"x") is not None
        if n > 1:
            assert proven.check(i, entries[(i + 1) % n]) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_same_answer_as_the_full_check_for_any_table(draw: st.DataObject) -> None:
    """Tamper with the table (change, drop or add a subtree hash) and check leaves in a random
    order, right and wrong ones mixed: every answer equals the full path check's."""
    n = draw.draw(st.integers(1, 80))
    entries, root, table = _tree(n, draw.draw(st.integers(0, 3)))
    table = dict(table)
    for _ in range(draw.draw(st.integers(0, 3))):
        op = draw.draw(st.sampled_from(["change", "drop", "add"]))
        keys = sorted(table)
        if op == "change" and keys:
            k = draw.draw(st.sampled_from(keys))
            table[k] = hashlib.sha256(table[k]).digest()
        elif op == "drop" and keys:
            del table[draw.draw(st.sampled_from(keys))]
        else:
            b = draw.draw(st.integers(0, n - 1))
            e = draw.draw(st.integers(b + 1, n))
            table[(b, e)] = hashlib.sha256(bytes([b, e % 256])).digest()
    proven = ProvenNodes(n, root, table)
    checks = draw.draw(st.lists(st.tuples(st.integers(0, n - 1), st.booleans()), max_size=60))
    for i, honest in checks:
        data = entries[i] if honest else entries[i][:-1] + b"?"
        got = proven.check(i, data)
        want = inclusion_problem(i, data, n, root, table)
        assert (got is None) == (want is None), (n, i, honest)
        assert got == want  # same text too: findings do not depend on the order of checks


def test_wrong_root_and_out_of_range_index() -> None:
    entries, root, table = _tree(10)
    wrong = ProvenNodes(10, hashlib.sha256(b"other").digest(), table)
    assert all(wrong.check(i, entries[i]) is not None for i in range(10))
    ok = ProvenNodes(10, root, table)
    assert ok.check(10, b"x") == inclusion_problem(10, b"x", 10, root, table)
    assert ok.check(3, entries[3]) is None


def test_bad_leaf_first_does_not_poison_the_memo() -> None:
    """A failed path remembers nothing: a forged leaf checked before the honest ones neither
    makes them fail nor gets accepted after them."""
    entries, root, table = _tree(16)
    proven = ProvenNodes(16, root, table)
    assert proven.check(5, b"forged") is not None
    assert all(proven.check(i, entries[i]) is None for i in range(16))
    assert proven.check(5, b"forged") is not None


# ----------------------------------------------------------------------------- keys


def test_key_at_follows_enroll_rotate_revoke() -> None:
    a, b = b"A" * 32, b"B" * 32
    events = [KeyEvent(3, "enroll", a), KeyEvent(10, "rotate", b, from_seq=50, prev_key=a),
              KeyEvent(20, "revoke")]

    def payload(seq: int) -> bytes:
        return Payload("gw-x", seq, 1, (Reading("s", "q", "/", 1.0, 1.7e9),)).to_cbor()

    assert key_at(events, 2, payload(1)) == (None, None)
    assert key_at(events, 5, payload(60)) == (a, None)  # before the rotation is logged
    assert key_at(events, 12, payload(49)) == (a, None)
    assert key_at(events, 12, payload(50)) == (b, None)
    assert key_at(events, 25, payload(60)) == (b, 20)
    # a claimed seq that cannot be read falls back to the first key; the signature decides
    assert key_at(events, 12, b"\xff\xff") == (a, None)


# ----------------------------------------------------------------------------- messages


def _messages(n: int) -> tuple[list[bytes], dict[str, list[KeyEvent]], bytes]:
    key = Ed25519PrivateKey.generate()
    pk = public_key_bytes(key)
    gw = gateway_id_for(pk)
    msgs = [encode_message(Payload(gw, i + 1, 1, (Reading("s", "t", "Cel", 20.0 + i,
                                                          1.75e9 + i),)), key)
            for i in range(n)]
    return msgs, {gw: [KeyEvent(0, "enroll", pk)]}, pk


def test_answers_for_good_forged_foreign_and_garbage_messages() -> None:
    msgs, events, _ = _messages(6)
    stranger, _, _ = _messages(1)
    forged = bytearray(msgs[2])
    forged[-5] ^= 1  # inside the signature
    entries = [b"registry", *msgs[:2], bytes(forged), *msgs[3:], stranger[0], b"\x01garbage"]
    root = merkle.root_from_leaves(entries)
    n = len(entries)
    leaves = [merkle.leaf_hash(e) for e in entries]
    table = {r: merkle.root_from_leaf_hashes(leaves[r[0]:r[1]])
             for i in range(n) for r in merkle.inclusion_proof_ranges(i, n)}
    ctx = Context(table, [(n, root)], events)
    jobs = [(i, entries[i], 0) for i in range(1, n)]
    got = [r for chunk in check_messages(jobs, ctx, workers=1) for r in chunk]
    kinds = [r[0] for r in got]
    assert kinds == [OK, OK, BAD_SIGNATURE, OK, OK, OK, UNKNOWN_KEY, NOT_A_MESSAGE]
    assert all(r[3] is None for r in got[:7])  # every message is in the tree
    seq, boot, readings = got[0][2]
    assert (seq, boot) == (1, 1) and readings == (("s", "t", "Cel", 20.0, 1.75e9, ""),)
    # the same jobs against a table with one wrong hash: the affected proofs fail
    bad = dict(table)
    bad[(0, 1)] = bytes(32)  # the sibling of leaf 1 only
    answers = Context(bad, [(n, root)], events).check(jobs)
    assert answers[0][3] is not None and answers[0][0] == OK  # signature fine, proof not
    assert [a[3] is None for a in answers[:7]] == [
        inclusion_problem(i, entries[i], n, root, bad) is None for i in range(1, 8)]
    assert sum(a[3] is not None for a in answers[:7]) == 1


@pytest.mark.parametrize("other_thread", [False, True])
def test_pool_gives_the_serial_answers(other_thread: bool) -> None:
    """Past PARALLEL_MIN messages the check runs in worker processes; the answers, in
    order, are those of this process. A single-threaded caller's workers are forked and
    inherit the jobs; with another thread alive (the collector's API serving the inspector
    page) they come from the forkserver and receive everything: both must agree."""
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from inspector import batch as verify_batch

    if not other_thread:
        # a fresh interpreter: in the suite's process other tests leave daemon threads behind
        code = (
            "import threading\n"
            "from inspector import batch as verify_batch\n"
            "from tests.inspector.test_verify_batch import _pool_matches_serial\n"
            "assert threading.active_count() == 1\n"
            "assert verify_batch._start_method() == 'fork', verify_batch._start_method()\n"
            "_pool_matches_serial()\n"
        )
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait, daemon=True)
    waiter.start()
    try:
        assert verify_batch._start_method() == "forkserver"
        _pool_matches_serial()
    finally:
        stop.set()


def _pool_matches_serial() -> None:
    from inspector import batch as verify_batch

    msgs, events, _ = _messages(verify_batch.PARALLEL_MIN + 300)
    n = len(msgs)
    leaves = [merkle.leaf_hash(m) for m in msgs]
    root = merkle.root_from_leaf_hashes(leaves)
    ranges = {r for i in range(n) for r in merkle.inclusion_proof_ranges(i, n)}
    table = {r: merkle.root_from_leaf_hashes(leaves[r[0]:r[1]]) for r in ranges}
    jobs = [(i, m, 0) for i, m in enumerate(msgs)]
    jobs[7] = (7, msgs[8], 0)  # a message at another's index: its proof must fail
    serial = Context(table, [(n, root)], events).check(jobs)
    pooled = [r for chunk in check_messages(jobs, Context(table, [(n, root)], events), 2)
              for r in chunk]
    assert pooled == serial
    assert serial[7][3] is not None and sum(r[3] is not None for r in serial) == 1


def test_workers_start_at_once_and_stop_when_abandoned() -> None:
    """The pool starts when the checks are made (the verifier asks chain nodes meanwhile) and
    is stopped by close() even when no answer was read (an error while asking the nodes)."""
    from inspector import batch as verify_batch

    msgs, events, _ = _messages(verify_batch.PARALLEL_MIN)
    jobs = [(i, m, -1) for i, m in enumerate(msgs)]
    checks = verify_batch.MessageChecks(jobs, Context({}, [], events), workers=2)
    pool = checks._pool
    assert pool is not None
    futures = list(pool._pending_work_items.values())  # submitted, not waiting for iteration
    assert futures
    checks.close()
    assert checks._pool is None
    assert all(w.future.done() for w in futures)
    with verify_batch.MessageChecks(jobs, Context({}, [], events), workers=2) as again:
        answers = [r for chunk in again for r in chunk]
    assert [r[0] for r in answers] == [OK] * len(jobs)
