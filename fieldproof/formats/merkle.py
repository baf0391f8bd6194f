"""RFC 9162 §2.1 Merkle hash trees: hashing, inclusion and consistency proofs.

The module follows the RFC section by section so an inspector can read it beside the text:

* §2.1.1   tree definition: leaf/node hashing, the empty root, the naive MTH reference;
* §2.1.3.1 generating inclusion proofs (PATH), §2.1.3.2 verifying them;
* §2.1.4.1 generating consistency proofs (PROOF/SUBPROOF), §2.1.4.2 verifying them.

A last section (not in the RFC) maps the RFC's recursion onto *stored perfect subtrees*, so a
log holding millions of leaves answers any root or proof with O(log n) node reads and appends
with amortised O(1) node writes. Nothing here does I/O: storage passes a `NodeReader`.

Verification functions raise `ProofError` for every kind of bad input and nothing else, so a
verifier fed hostile bundles only has one failure to handle.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from fieldproof.errors import FormatError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "NodeID",
    "NodeReader",
    "ProofError",
    "append_leaves",
    "consistency_proof_ranges",
    "frontier",
    "inclusion_proof_ranges",
    "largest_power_of_two_below",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "reference_consistency_proof",
    "reference_inclusion_proof",
    "root_from_inclusion",
    "root_from_leaf_hashes",
    "root_from_leaves",
    "stored_consistency_proof",
    "stored_inclusion_proof",
    "stored_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""SHA-256 output size; every node, leaf hash and root is exactly this long."""

MAX_TREE_SIZE = 2**64 - 1
"""RFC 9162 carries tree sizes and leaf indices as uint64."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(FormatError):
    """A Merkle proof, or the values it is checked against, does not prove what was claimed."""


# ---------------------------------------------------------------------------------------------
# RFC 9162 §2.1.1 — Definition of the Merkle Tree
# ---------------------------------------------------------------------------------------------

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = HASH(): the root of the empty tree."""


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d(0)}) = HASH(0x00 || d(0)); the 0x00 prefix stops a leaf posing as a node."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || MTH(left) || MTH(right)) for an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1), i.e. where MTH splits D[n]."""
    if n < 2:
        raise ValueError(f"a split point needs at least 2 leaves, got {n}")
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, by the RFC's recursion (reference, O(n))."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = largest_power_of_two_below(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def root_from_leaves(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) computed naively from the entries: the reference every fast path is tested on."""
    return root_from_leaf_hashes([leaf_hash(e) for e in entries])


# ---------------------------------------------------------------------------------------------
# RFC 9162 §2.1.3.1 — Generating an Inclusion Proof
# ---------------------------------------------------------------------------------------------


def reference_inclusion_proof(entries: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) exactly as written in the RFC (reference implementation, O(n))."""
    if not 0 <= index < len(entries):
        raise ValueError(f"leaf index {index} is outside a tree of {len(entries)} leaves")
    return _path(index, [leaf_hash(e) for e in entries])


def _path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*_path(m, d[:k]), root_from_leaf_hashes(d[k:])]
    return [*_path(m - k, d[k:]), root_from_leaf_hashes(d[:k])]


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [begin, end) whose MTH form PATH(index, D[size]), in proof order.

    This is the RFC recursion unrolled without touching data: the proof is the list of
    sibling subtrees from the leaf upwards.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


# ---------------------------------------------------------------------------------------------
# RFC 9162 §2.1.3.2 — Verifying an Inclusion Proof
# ---------------------------------------------------------------------------------------------


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """The root that `proof` implies for `leaf_hash` at `index` in a tree of `size` leaves.

    Steps 1-4 of §2.1.3.2 (plus the final sn == 0 check of step 5); raises ProofError when the
    proof cannot belong to such a tree at all.
    """
    h = _as_hash(leaf_hash, "leaf hash")
    _check_uint64(index, "leaf index")
    _check_uint64(size, "tree size")
    nodes = _as_hash_list(proof, "inclusion proof")
    # Step 1.
    if index >= size:
        raise ProofError(f"leaf index {index} is not inside a tree of {size} leaves")
    expected = len(inclusion_proof_ranges(index, size))
    if len(nodes) != expected:
        raise ProofError(
            f"an inclusion proof for leaf {index} in a tree of {size} leaves has "
            f"{expected} hashes, this one has {len(nodes)}"
        )
    # Steps 2-3.
    fn, sn = index, size - 1
    r = h
    # Step 4.
    for p in nodes:
        if sn == 0:
            raise ProofError("inclusion proof has more hashes than the tree has levels")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # Step 5 (first half).
    if sn != 0:
        raise ProofError("inclusion proof is too short for this tree size")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with head `root`."""
    expected_root = _as_hash(root, "root hash")
    computed = root_from_inclusion(leaf_hash, index, size, proof)
    # Step 5 (second half).
    if not hmac.compare_digest(computed, expected_root):
        raise ProofError(
            f"inclusion proof for leaf {index} leads to root {computed.hex()}, "
            f"not the expected {expected_root.hex()} for tree size {size}"
        )


# ---------------------------------------------------------------------------------------------
# RFC 9162 §2.1.4.1 — Generating a Consistency Proof
# ---------------------------------------------------------------------------------------------


def reference_consistency_proof(entries: Sequence[bytes], size1: int) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) as written in the RFC (reference, O(n))."""
    if not 0 <= size1 <= len(entries):
        raise ValueError(f"size {size1} is outside a tree of {len(entries)} leaves")
    if size1 == 0:
        return []
    return _subproof(size1, [leaf_hash(e) for e in entries], True)


def _subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [root_from_leaf_hashes(d)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(m, d[:k], b), root_from_leaf_hashes(d[k:])]
    return [*_subproof(m - k, d[k:], False), root_from_leaf_hashes(d[:k])]


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges [begin, end) whose MTH form PROOF(size1, D[size2]), in proof order.

    An empty old tree, or an unchanged one, needs no proof hashes.
    """
    if not 0 <= size1 <= size2:
        raise ValueError(f"cannot prove tree size {size1} consistent with size {size2}")
    if size1 == 0 or size1 == size2:
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi, b = 0, size2, True
    while size1 != hi:
        k = largest_power_of_two_below(hi - lo)
        if size1 <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            b = False
    if not b:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


# ---------------------------------------------------------------------------------------------
# RFC 9162 §2.1.4.2 — Verifying Consistency between Two Tree Heads
# ---------------------------------------------------------------------------------------------


def verify_consistency(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of `size2` leaves with head `root2` extends the one at `size1`/`root1`.

    Edge cases the RFC's loop does not cover are handled as PROOF() defines them: from an empty
    tree the proof is empty (root1 must be the empty root); between equal sizes the proof is
    empty and the roots must be equal.
    """
    _check_uint64(size1, "old tree size")
    _check_uint64(size2, "new tree size")
    nodes = _as_hash_list(proof, "consistency proof")
    first_hash = _as_hash(root1, "old root hash")
    second_hash = _as_hash(root2, "new root hash")
    if size1 > size2:
        raise ProofError(
            f"old tree size {size1} is larger than new tree size {size2}: "
            "a log can only grow, so these checkpoints are in the wrong order or the log forked"
        )
    expected = len(consistency_proof_ranges(size1, size2))
    if len(nodes) != expected:
        raise ProofError(
            f"a consistency proof from size {size1} to size {size2} has {expected} hashes, "
            f"this one has {len(nodes)}"
        )
    if size1 == 0:
        if not hmac.compare_digest(first_hash, EMPTY_ROOT):
            raise ProofError(f"root of the empty tree must be {EMPTY_ROOT.hex()}")
        return
    if size1 == size2:
        if not hmac.compare_digest(first_hash, second_hash):
            raise ProofError(
                f"two different roots for the same tree size {size1}: the log has forked"
            )
        return
    # Step 1.
    if not nodes:
        raise ProofError("consistency proof is empty")
    # Step 2.
    if size1 & (size1 - 1) == 0:
        nodes = [first_hash, *nodes]
    # Step 3.
    fn, sn = size1 - 1, size2 - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = nodes[0]
    # Step 6.
    for c in nodes[1:]:
        if sn == 0:
            raise ProofError("consistency proof has more hashes than the tree has levels")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is too short for these tree sizes")
    if not hmac.compare_digest(fr, first_hash):
        raise ProofError(
            f"consistency proof does not reproduce the old root {first_hash.hex()} "
            f"at size {size1}: the old checkpoint is not a prefix of the new tree"
        )
    if not hmac.compare_digest(sr, second_hash):
        raise ProofError(
            f"consistency proof does not reproduce the new root {second_hash.hex()} "
            f"at size {size2}: the new checkpoint does not extend the old one"
        )


# ---------------------------------------------------------------------------------------------
# Input checks shared by the verifiers: anything malformed becomes a ProofError.
# ---------------------------------------------------------------------------------------------


def _check_uint64(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{what} {value} is outside 0..2^64-1")


def _as_hash(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise ProofError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes (SHA-256), got {len(value)}")
    return bytes(value)


def _as_hash_list(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list | tuple):
        raise ProofError(f"{what} must be a list of hashes, got {type(value).__name__}")
    if len(value) > 2 * 64:
        raise ProofError(f"{what} has {len(value)} hashes; no uint64-sized tree needs that many")
    return [_as_hash(v, f"{what} hash #{i}") for i, v in enumerate(value)]


# ---------------------------------------------------------------------------------------------
# Stored perfect subtrees (not in the RFC): how a log answers with O(log n) reads.
#
# A node (level, index) is the perfect subtree over leaves [index * 2^level, (index+1) * 2^level);
# level 0 nodes are leaf hashes. Every range the RFC recursion visits is either such a node or
# a right-edge range [begin, size) whose MTH folds the perfect subtrees that tile it.
# ---------------------------------------------------------------------------------------------

NodeID = tuple[int, int]
"""(level, index) of a perfect subtree."""

NodeReader = Callable[[Sequence[NodeID]], Sequence[bytes]]
"""Storage callback: hashes of the given perfect subtrees, in the same order."""


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """The perfect subtrees tiling [begin, end), largest-leftmost first.

    For ranges produced by the RFC recursion (and for [0, size)) these are at most
    log2(end - begin) + 1 nodes with strictly decreasing levels.
    """
    if not 0 <= begin <= end:
        raise ValueError(f"bad leaf range [{begin}, {end})")
    nodes: list[NodeID] = []
    while begin < end:
        level = (begin & -begin).bit_length() - 1 if begin else (end - begin).bit_length()
        while begin + (1 << level) > end:
            level -= 1
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def frontier(size: int) -> list[NodeID]:
    """The perfect subtrees that make up a tree of `size` leaves (one per set bit of size)."""
    return range_nodes(0, size)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a right-edge range from its tiling subtrees: right-to-left node hashing."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def _hashes_for_ranges(ranges: Sequence[tuple[int, int]], read: NodeReader) -> list[bytes]:
    """MTH of each range, reading every needed stored node in one batch."""
    tilings = [range_nodes(b, e) for b, e in ranges]
    wanted: list[NodeID] = [n for t in tilings for n in t]
    if not wanted:
        return []
    got = read(wanted)
    if len(got) != len(wanted):
        raise LookupError(f"node store returned {len(got)} hashes for {len(wanted)} nodes")
    out: list[bytes] = []
    pos = 0
    for t in tilings:
        out.append(_fold(got[pos : pos + len(t)]))
        pos += len(t)
    return out


def stored_root(size: int, read: NodeReader) -> bytes:
    """MTH(D[size]) from at most log2(size)+1 stored nodes."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return _hashes_for_ranges([(0, size)], read)[0]


def stored_inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """PATH(index, D[size]) from O(log size) stored nodes."""
    return _hashes_for_ranges(inclusion_proof_ranges(index, size), read)


def stored_consistency_proof(size1: int, size2: int, read: NodeReader) -> list[bytes]:
    """PROOF(size1, D[size2]) from O(log size2) stored nodes."""
    return _hashes_for_ranges(consistency_proof_ranges(size1, size2), read)


def append_leaves(
    size: int, frontier_hashes: Sequence[bytes], leaf_hashes: Sequence[bytes]
) -> list[tuple[int, int, bytes]]:
    """Every perfect subtree that is complete after appending `leaf_hashes` to a tree of `size`.

    `frontier_hashes` are the hashes of `frontier(size)`, in that order. Returns
    (level, index, hash) rows to store: one leaf row per entry plus, amortised, one interior
    node per entry, so append cost does not grow with the log.
    """
    ids = frontier(size)
    if len(frontier_hashes) != len(ids):
        raise ValueError(
            f"tree of size {size} has {len(ids)} frontier nodes, got {len(frontier_hashes)}"
        )
    stack: list[tuple[int, bytes]] = [
        (lvl, h) for (lvl, _), h in zip(ids, frontier_hashes, strict=True)
    ]
    out: list[tuple[int, int, bytes]] = []
    idx = size
    for lh in leaf_hashes:
        out.append((0, idx, lh))
        level, h = 0, lh
        while stack and stack[-1][0] == level:
            h = node_hash(stack.pop()[1], h)
            level += 1
            out.append((level, idx >> level, h))
        stack.append((level, h))
        idx += 1
    return out
