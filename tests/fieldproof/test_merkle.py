"""RFC 9162 Merkle tree: published vectors byte for byte, the stored-node proof path against the
RFC's own recursion, and verifiers that reject every altered proof with ProofError only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldproof.formats import merkle
from fieldproof.formats.merkle import (
    EMPTY_ROOT,
    ProofError,
    leaf_hash,
    node_hash,
    reference_consistency_proof,
    reference_inclusion_proof,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)


@pytest.fixture(scope="module")
def vec(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / "merkle" / "rfc6962_vectors.json").read_text())
    return data


def _leaves(vec: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(h) for h in vec["leaves_hex"]]


class DictNodes:
    """Perfect-subtree store in a dict, filled only through merkle.append_leaves."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0
        self.reads = 0

    def read(self, ids: Any) -> list[bytes]:
        self.reads += len(ids)
        return [self.nodes[i] for i in ids]

    def append(self, entries: list[bytes]) -> None:
        front = self.read(merkle.frontier(self.size))
        for level, idx, h in merkle.append_leaves(
            self.size, front, [leaf_hash(e) for e in entries]
        ):
            assert (level, idx) not in self.nodes
            self.nodes[(level, idx)] = h
        self.size += len(entries)


# --- RFC 6962/9162 vectors (transparency-dev/merkle, certificate-transparency-go) -----------


def test_hash_primitives_match_definition(vec: dict[str, Any]) -> None:
    assert EMPTY_ROOT.hex() == vec["empty_tree_root_hex"]
    assert root_from_leaves([]).hex() == vec["empty_tree_root_hex"]
    for entry, want in zip(_leaves(vec), vec["leaf_hashes_hex"], strict=True):
        assert leaf_hash(entry).hex() == want
        assert leaf_hash(entry) == hashlib.sha256(b"\x00" + entry).digest()
    a, b = bytes(range(32)), bytes(range(32, 64))
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_vector_roots(vec: dict[str, Any]) -> None:
    leaves = _leaves(vec)
    assert len(vec["roots_hex_by_size"]) == 8
    store = DictNodes()
    for size_str, want in sorted(vec["roots_hex_by_size"].items(), key=lambda kv: int(kv[0])):
        n = int(size_str)
        assert root_from_leaves(leaves[:n]).hex() == want
        store.append(leaves[store.size : n])
        assert merkle.stored_root(n, store.read).hex() == want


def test_vector_inclusion_proofs(vec: dict[str, Any]) -> None:
    leaves = _leaves(vec)
    store = DictNodes()
    store.append(leaves)
    assert len(vec["inclusion"]) >= 5
    for case in vec["inclusion"]:
        i, n = case["leaf_index"], case["tree_size"]
        want = [bytes.fromhex(h) for h in case["proof_hex"]]
        root = bytes.fromhex(case["root_hex"])
        lh = bytes.fromhex(case["leaf_hash_hex"])
        assert leaf_hash(bytes.fromhex(case["leaf_hex"])) == lh
        assert reference_inclusion_proof(leaves[:n], i) == want
        assert merkle.stored_inclusion_proof(i, n, store.read) == want
        assert merkle.root_from_inclusion(lh, i, n, want) == root
        verify_inclusion(lh, i, n, want, root)


def test_vector_consistency_proofs(vec: dict[str, Any]) -> None:
    leaves = _leaves(vec)
    store = DictNodes()
    store.append(leaves)
    assert len(vec["consistency"]) >= 5
    for case in vec["consistency"]:
        m, n = case["size1"], case["size2"]
        want = [bytes.fromhex(h) for h in case["proof_hex"]]
        r1, r2 = bytes.fromhex(case["root1_hex"]), bytes.fromhex(case["root2_hex"])
        assert reference_consistency_proof(leaves[:n], m) == want
        assert merkle.stored_consistency_proof(m, n, store.read) == want
        verify_consistency(m, n, want, r1, r2)


def test_every_small_proof_from_vector_leaves(vec: dict[str, Any]) -> None:
    """All (i, n) and (m, n) for n <= 8, as the vectors' SOURCE.md self-check did."""
    leaves = _leaves(vec)
    roots = {0: EMPTY_ROOT} | {
        int(k): bytes.fromhex(v) for k, v in vec["roots_hex_by_size"].items()
    }
    for n in range(1, 9):
        for i in range(n):
            proof = reference_inclusion_proof(leaves[:n], i)
            verify_inclusion(leaf_hash(leaves[i]), i, n, proof, roots[n])
        for m in range(0, n + 1):
            proof = reference_consistency_proof(leaves[:n], m)
            verify_consistency(m, n, proof, roots[m], roots[n])


# --- stored-node path against the RFC recursion ----------------------------------------------

entry_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(entries=entry_lists, data=st.data())
def test_stored_proofs_equal_reference(entries: list[bytes], data: st.DataObject) -> None:
    store = DictNodes()
    pos = 0
    while pos < len(entries):  # irregular batches: append must not depend on batch shape
        step = data.draw(st.integers(1, len(entries) - pos), label="batch")
        store.append(entries[pos : pos + step])
        pos += step
    n = data.draw(st.integers(1, len(entries)), label="size")
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(0, n), label="size1")
    root_n, root_m = root_from_leaves(entries[:n]), root_from_leaves(entries[:m])

    assert merkle.stored_root(n, store.read) == root_n
    incl = merkle.stored_inclusion_proof(i, n, store.read)
    assert incl == reference_inclusion_proof(entries[:n], i)
    verify_inclusion(leaf_hash(entries[i]), i, n, incl, root_n)
    cons = merkle.stored_consistency_proof(m, n, store.read)
    assert cons == reference_consistency_proof(entries[:n], m)
    verify_consistency(m, n, cons, root_m, root_n)


def test_append_writes_amortised_constant_nodes() -> None:
    """n leaves store exactly 2n - popcount(n) nodes, however they are batched."""
    for batches in ([1] * 300, [7, 1, 100, 3, 189], [300]):
        store = DictNodes()
        for b in batches:
            store.append([b"x%d" % (store.size + k) for k in range(b)])
        assert store.size == 300
        assert len(store.nodes) == 2 * 300 - bin(300).count("1")


@pytest.mark.parametrize("size", [1, 2, 3, 1000, 1023, 1024, 1025, 2**20 + 5, 2**40 - 1, 2**63])
def test_proof_reads_are_logarithmic(size: int) -> None:
    """Node reads for any proof stay within 2*log2(size)+2, without touching data."""
    bound = 2 * size.bit_length() + 2
    for i in {0, size // 3, size - 1}:
        nodes = [
            n for b, e in merkle.inclusion_proof_ranges(i, size) for n in merkle.range_nodes(b, e)
        ]
        assert len(nodes) <= bound
    for m in {1, size // 2, size - 1}:
        ranges = merkle.consistency_proof_ranges(m, size)
        assert sum(len(merkle.range_nodes(b, e)) for b, e in ranges) <= bound
    assert len(merkle.frontier(size)) == bin(size).count("1")


# --- rejection of altered proofs --------------------------------------------------------------

_ENTRIES = [b"fieldproof leaf %d" % k for k in range(21)]


def _flip(h: bytes, pos: int) -> bytes:
    return h[:pos] + bytes([h[pos] ^ 0x01]) + h[pos + 1 :]


@pytest.mark.parametrize(
    ("index", "size"), [(0, 1), (0, 2), (1, 2), (4, 5), (5, 8), (3, 21), (20, 21)]
)
def test_inclusion_rejects_every_mutation(index: int, size: int) -> None:
    entries = _ENTRIES[:size]
    lh, root = leaf_hash(entries[index]), root_from_leaves(entries)
    proof = reference_inclusion_proof(entries, index)
    verify_inclusion(lh, index, size, proof, root)

    for k, node in enumerate(proof):
        for pos in range(32):
            bad = [*proof[:k], _flip(node, pos), *proof[k + 1 :]]
            with pytest.raises(ProofError):
                verify_inclusion(lh, index, size, bad, root)
    for pos in range(32):
        with pytest.raises(ProofError):
            verify_inclusion(_flip(lh, pos), index, size, proof, root)
        with pytest.raises(ProofError):
            verify_inclusion(lh, index, size, proof, _flip(root, pos))
    if proof:
        with pytest.raises(ProofError, match="hashes"):
            verify_inclusion(lh, index, size, proof[:-1], root)
    if len(set(proof)) > 1:
        with pytest.raises(ProofError):
            verify_inclusion(lh, index, size, list(reversed(proof)), root)
    for extra in (proof[-1:] or [root], [EMPTY_ROOT]):
        with pytest.raises(ProofError, match="hashes"):
            verify_inclusion(lh, index, size, [*proof, *extra], root)
    # Another (index, size) claim with its own true root: accepted exactly when the proof for
    # that claim is byte-identical, so the verifier binds the proof to the claimed position.
    for other_size in range(1, len(_ENTRIES) + 1):
        for other_index in range(other_size):
            if (other_index, other_size) == (index, size):
                continue
            other_entries = _ENTRIES[:other_size]
            other_root = root_from_leaves(other_entries)
            same = (
                other_entries[other_index] == entries[index]
                and reference_inclusion_proof(other_entries, other_index) == proof
            )
            if same:
                verify_inclusion(lh, other_index, other_size, proof, other_root)
            else:
                with pytest.raises(ProofError):
                    verify_inclusion(lh, other_index, other_size, proof, other_root)


@pytest.mark.parametrize(
    ("size1", "size2"), [(1, 2), (1, 8), (2, 5), (3, 7), (4, 8), (6, 8), (7, 21), (16, 21)]
)
def test_consistency_rejects_every_mutation(size1: int, size2: int) -> None:
    r1, r2 = root_from_leaves(_ENTRIES[:size1]), root_from_leaves(_ENTRIES[:size2])
    proof = reference_consistency_proof(_ENTRIES[:size2], size1)
    verify_consistency(size1, size2, proof, r1, r2)

    for k, node in enumerate(proof):
        for pos in range(32):
            bad = [*proof[:k], _flip(node, pos), *proof[k + 1 :]]
            with pytest.raises(ProofError):
                verify_consistency(size1, size2, bad, r1, r2)
    for pos in range(32):
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, _flip(r1, pos), r2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, r1, _flip(r2, pos))
    with pytest.raises(ProofError, match="hashes"):
        verify_consistency(size1, size2, proof[:-1], r1, r2)
    with pytest.raises(ProofError, match="hashes"):
        verify_consistency(size1, size2, [*proof, proof[-1]], r1, r2)
    with pytest.raises(ProofError, match="hashes"):
        verify_consistency(size1, size2, [], r1, r2)
    with pytest.raises(ProofError):
        verify_consistency(size2, size1, proof, r2, r1)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, r2, r1)
    for m in range(0, len(_ENTRIES) + 1):
        for n in range(m, len(_ENTRIES) + 1):
            if (m, n) == (size1, size2):
                continue
            rm, rn = root_from_leaves(_ENTRIES[:m]), root_from_leaves(_ENTRIES[:n])
            if reference_consistency_proof(_ENTRIES[:n], m) == proof:
                verify_consistency(m, n, proof, rm, rn)
            else:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, proof, rm, rn)


def test_consistency_edge_cases() -> None:
    r5 = root_from_leaves(_ENTRIES[:5])
    verify_consistency(5, 5, [], r5, r5)
    verify_consistency(0, 5, [], EMPTY_ROOT, r5)
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(5, 5, [], r5, root_from_leaves(_ENTRIES[:4]))
    with pytest.raises(ProofError, match="hashes"):
        verify_consistency(5, 5, [r5], r5, r5)
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(0, 5, [], r5, r5)
    with pytest.raises(ProofError, match="hashes"):
        verify_consistency(0, 5, [r5], EMPTY_ROOT, r5)


_H = bytes(32)
_BAD_HASHES: list[Any] = [None, "00" * 32, 0, b"", bytes(31), bytes(33), [bytes(32)], 1.5]
_BAD_INTS: list[Any] = [None, -1, 1.0, "1", True, 2**64, b"\x01", [1]]


def test_inclusion_bad_types_raise_proof_error_only() -> None:
    good = (leaf_hash(b"a"), 0, 2, [leaf_hash(b"b")], root_from_leaves([b"a", b"b"]))
    verify_inclusion(*good)
    for pos, bads in ((0, _BAD_HASHES), (1, _BAD_INTS), (2, _BAD_INTS), (4, _BAD_HASHES)):
        for bad in bads:
            args: list[Any] = list(good)
            args[pos] = bad
            with pytest.raises(ProofError):
                verify_inclusion(*args)
    for bad_proof in [
        None,
        "ab",
        b"x" * 32,
        {0: _H},
        (h for h in [_H]),
        [None],
        [bytes(31)],
        [_H] * 200,
    ]:
        with pytest.raises(ProofError):
            verify_inclusion(good[0], 0, 2, bad_proof, good[4])  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="not inside"):
        verify_inclusion(good[0], 2, 2, good[3], good[4])
    with pytest.raises(ProofError, match="not inside"):
        verify_inclusion(good[0], 0, 0, [], EMPTY_ROOT)


def test_consistency_bad_types_raise_proof_error_only() -> None:
    r1, r2 = root_from_leaves(_ENTRIES[:1]), root_from_leaves(_ENTRIES[:2])
    good = (1, 2, [leaf_hash(_ENTRIES[1])], r1, r2)
    verify_consistency(*good)
    for pos, bads in ((0, _BAD_INTS), (1, _BAD_INTS), (3, _BAD_HASHES), (4, _BAD_HASHES)):
        for bad in bads:
            args: list[Any] = list(good)
            args[pos] = bad
            with pytest.raises(ProofError):
                verify_consistency(*args)
    for bad_proof in [None, "ab", b"x" * 32, {0: _H}, [None], [bytes(33)], [_H] * 200]:
        with pytest.raises(ProofError):
            verify_consistency(1, 2, bad_proof, r1, r2)  # type: ignore[arg-type]


junk = st.one_of(
    st.none(),
    st.integers(-(2**70), 2**70),
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
    st.text(max_size=5),
    st.floats(allow_nan=True),
    st.lists(st.binary(min_size=32, max_size=32), max_size=8),
    st.lists(st.one_of(st.binary(max_size=33), st.integers(), st.none()), max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(args=st.tuples(junk, junk, junk, junk, junk))
def test_verifiers_raise_only_proof_error(args: tuple[Any, ...]) -> None:
    """Whatever a hostile bundle holds, the verifier answers with ProofError and nothing else.

    Random junk can only "verify" as one of the trivial true claims (a one-leaf tree whose
    root is the leaf hash; equal sizes with equal roots; growth from the empty tree).
    """
    a, b, c, d, e = args
    try:
        verify_inclusion(a, b, c, d, e)
    except ProofError:
        pass
    else:
        assert (b, c, d) == (0, 1, [])
        assert a == e
    try:
        verify_consistency(a, b, c, d, e)
    except ProofError:
        pass
    else:
        assert c == []
        assert (a == b and d == e) or (a == 0 and d == EMPTY_ROOT)
