"""The verifier's per-message work, for many messages at once: key lookup, inclusion proof and
COSE signature, in this process or spread over worker processes.

Signature checks are the cost a verifier cannot avoid (:func:`fieldproof.wire.decode_message_plain`
is ~48 µs for a 5-reading message, ~38 µs of it libsodium's Ed25519; the rest is its strict
reading of the bytes). Everything else here is arranged not to add to it (~10 µs a message):

* inclusion proofs into one checkpoint share their work (:class:`ProvenNodes`): a message
  costs its leaf hash and about two node hashes (3 µs) instead of a full RFC 9162 path (40 µs);
* each message is parsed once (:func:`fieldproof.wire.open_message`): the same parse gives its
  kid, its claimed seq (to pick among rotated keys) and feeds the strict decode;
* workers start before the chain is asked about anchors and inherit the jobs (forked) or get
  the subtree table, checkpoint heads and key history once (forkserver), then answer a chunk
  at a time with plain tuples, so the parent has little to do while they work and turns
  answers into results as they arrive.

Nothing in here makes a finding: :mod:`inspector.verify` turns the answers into findings, so the
serial and the parallel path cannot differ in what they report.
"""

from __future__ import annotations

import hashlib
import os
import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from typing import Any

import cbor2

from fieldproof.formats import merkle
from fieldproof.wire import (
    BadSignature,
    WireError,
    decode_message_plain,
    open_message,
    scan_cbor,
)

__all__ = [
    "BAD_SIGNATURE",
    "MALFORMED",
    "NOT_A_MESSAGE",
    "OK",
    "UNKNOWN_KEY",
    "Context",
    "Job",
    "KeyEvent",
    "MessageChecks",
    "ProvenNodes",
    "Result",
    "check_messages",
    "inclusion_problem",
    "key_at",
]

#: below this many messages a worker pool costs more than it saves
PARALLEL_MIN = 4000
#: messages per task: large enough that pickling and queueing vanish, small enough that the
#: parent can turn answers into results while workers still check
CHUNK = 2500


# ----------------------------------------------------------------------------- inclusion


def inclusion_problem(index: int, data: bytes, size: int, root: bytes,
                      hashes: Mapping[tuple[int, int], bytes]) -> str | None:
    """None if ``data`` is leaf ``index`` of the tree (size, root), else why not: the full
    RFC 9162 §2.1.3.2 check, path by path (the reference :class:`ProvenNodes` must agree with,
    and the source of its error texts)."""
    try:
        ranges = merkle.inclusion_proof_ranges(index, size)
        proof = [hashes[r] for r in ranges]
    except KeyError as exc:
        return f"the bundle lacks the subtree hash {exc.args[0]} its proof needs"
    except ValueError as exc:
        return str(exc)
    try:
        merkle.verify_inclusion(merkle.leaf_hash(data), index, size, proof, root)
    except merkle.ProofError as exc:
        return str(exc)
    return None


class ProvenNodes:
    """Inclusion proofs of many leaves into one tree head (size, root), sharing work.

    A leaf is checked bottom-up as RFC 9162 §2.1.3.2 does, each sibling taken from the bundle's
    subtree table; the node ranges are tracked so every node computed on a path that *reached
    the root* is remembered as proven. A later leaf stops as soon as it reaches a proven node:

    * equal hash: the leaf is included. This is not a shortcut with a weaker meaning. Above a
      node [lo, hi) the path of every leaf below it is the same (the siblings depend only on
      the range and the tree size, and each comes from the one table entry for its range), so
      folding the rest of this leaf's path is exactly the fold already done from that node,
      which gave the root. By induction from the root (proven by definition) every remembered
      node has this property, so the answer is the full check's answer, bit for bit.
    * different hash: the rest of the path would end in another root (short of a SHA-256
      collision); the full check is run to say which, with the usual error text.

    A failed path remembers nothing. Over a bundle's sequential messages a leaf costs its own
    hash and about two node hashes instead of ~17.
    """

    __slots__ = ("_known", "hashes", "root", "size")

    def __init__(self, size: int, root: bytes, hashes: Mapping[tuple[int, int], bytes]) -> None:
        self.size = size
        self.root = root
        self.hashes = hashes
        self._known: dict[tuple[int, int], bytes] = {(0, size): root} if size > 0 else {}

    def check(self, index: int, data: bytes) -> str | None:
        """None if ``data`` is leaf ``index`` of this tree, else why not."""
        size = self.size
        if not 0 <= index < size:
            return inclusion_problem(index, data, size, self.root, self.hashes)
        # merkle.leaf_hash and merkle.node_hash written out: a call costs as much as a hash
        known, hashes, sha256 = self._known, self.hashes, hashlib.sha256
        h = sha256(b"\x00" + data).digest()
        if size == 1:
            return None if h == self.root else inclusion_problem(index, data, size, self.root,
                                                                 hashes)
        lo, hi = index, index + 1
        fn, sn, width = index, size - 1, 1  # RFC 9162: node number and last node at a level
        path: list[tuple[tuple[int, int], bytes]] = []
        try:
            while True:
                if fn & 1:  # a left sibling
                    h = sha256(b"\x01" + hashes[(lo - width, lo)] + h).digest()
                    lo -= width
                elif fn < sn:  # a right sibling, possibly the tree's ragged right edge
                    right = min(hi + width, size)
                    h = sha256(b"\x01" + h + hashes[(hi, right)]).digest()
                    hi = right
                else:  # last node of its level and no sibling: it is its own parent
                    fn >>= 1
                    sn >>= 1
                    width <<= 1
                    continue
                fn >>= 1
                sn >>= 1
                width <<= 1
                node = (lo, hi)
                proven = known.get(node)  # the root is always known: the loop ends there
                if proven is not None:
                    if proven != h:
                        break
                    for key, value in path:
                        known[key] = value
                    return None
                path.append((node, h))
        except KeyError:
            pass
        return inclusion_problem(index, data, size, self.root, hashes)


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A proven registry event of one gateway, as far as keys are concerned."""

    index: int
    event: str
    public_key: bytes = b""
    farm: str = ""
    field: str = ""
    location: str = ""
    time: float | None = None
    from_seq: int = 0
    prev_key: bytes = b""


def _claimed_seq(payload: bytes) -> int | None:
    """The seq a payload claims, unverified: only to pick among a gateway's rotated keys (the
    signature then covers it, so a lie here only makes the check fail). Scanned first, so
    hostile CBOR cannot make the decoder allocate."""
    try:
        scan_cbor(payload, "payload")
        seq = cbor2.loads(payload).get("seq")
    except (WireError, ValueError, TypeError, AttributeError, cbor2.CBORDecodeError,
            OverflowError, RecursionError):
        return None
    return seq if type(seq) is int else None


def key_at(events: Sequence[KeyEvent], index: int, payload: bytes,
           ) -> tuple[bytes | None, int | None]:
    """(key, revoked at) for a message at log ``index`` carrying ``payload``, from its
    gateway's events before it (docs/bundle.md §4)."""
    keys: list[tuple[int, bytes]] = []
    revoked: int | None = None
    for ev in events:
        if ev.index > index:
            break
        if ev.event == "enroll":
            keys, revoked = [(0, ev.public_key)], None
        elif ev.event == "rotate":
            if keys and keys[-1][1] == ev.prev_key and ev.from_seq > keys[-1][0]:
                keys.append((ev.from_seq, ev.public_key))
        else:
            revoked = ev.index
    if not keys:
        return None, revoked
    if len(keys) == 1:
        return keys[0][1], revoked
    seq = _claimed_seq(payload)
    if seq is None:
        return keys[0][1], revoked
    return [k for start, k in keys if start <= seq][-1], revoked


# ----------------------------------------------------------------------------- checking

#: answer kinds: signature and structure fine / signature fails / malformed / the bytes are
#: not a fieldproof message at all (no kid) / no enrollment of the kid before the message
OK, BAD_SIGNATURE, MALFORMED, NOT_A_MESSAGE, UNKNOWN_KEY = range(5)

#: one message to check: (log index, bytes, checkpoint position or -1 for no proof to check)
Job = tuple[int, bytes, int]
#: (kind, gateway or None, value, inclusion problem or None, revoked at or None); value is
#: (seq, boot, readings as plain tuples) for OK, else the reason text
Result = tuple[int, str | None, Any, str | None, int | None]


@dataclass
class Context:
    """What every message check needs besides the message: the subtree table, the valid
    checkpoint heads by position (None: invalid), and each gateway's proven key events."""

    hashes: Mapping[tuple[int, int], bytes]
    heads: Sequence[tuple[int, bytes] | None]
    events: Mapping[str, Sequence[KeyEvent]]

    def __post_init__(self) -> None:
        self._proven: dict[int, ProvenNodes] = {}

    def proven(self, pos: int) -> ProvenNodes:
        p = self._proven.get(pos)
        if p is None:
            head = self.heads[pos]
            assert head is not None
            p = self._proven[pos] = ProvenNodes(head[0], head[1], self.hashes)
        return p

    def check(self, jobs: Sequence[Job]) -> list[Result]:
        """Each job's answer, in order. Never raises on hostile bytes."""
        out: list[Result] = []
        no_events: Sequence[KeyEvent] = ()
        for index, data, pos in jobs:
            try:
                gw, parsed = open_message(data)
            except Exception as exc:  # a verifier never crashes on hostile bytes
                why = str(exc) if isinstance(exc, WireError) else f"{type(exc).__name__}: {exc}"
                out.append((NOT_A_MESSAGE, None, why, None, None))
                continue
            key, revoked = key_at(self.events.get(gw, no_events), index, parsed.payload)
            if key is None:
                out.append((UNKNOWN_KEY, gw, None, None, revoked))
                continue
            problem = self.proven(pos).check(index, data) if pos >= 0 else None
            try:
                # plain tuples cross the process boundary several times faster than objects,
                # and the exact-form reader hands out one string object per distinct name
                # (pickle sends a repeated object once per chunk)
                _, seq, boot, readings = decode_message_plain(data, key, parsed)
                out.append((OK, gw, (seq, boot, readings), problem, revoked))
            except BadSignature as exc:
                out.append((BAD_SIGNATURE, gw, str(exc), problem, revoked))
            except WireError as exc:
                out.append((MALFORMED, gw, str(exc), problem, revoked))
            except Exception as exc:  # a verifier never crashes on hostile bytes
                out.append((MALFORMED, gw, f"{type(exc).__name__}: {exc}", problem, revoked))
        return out


# ----------------------------------------------------------------------------- workers

_WORKER: Context | None = None


def _pack_hashes(hashes: Mapping[tuple[int, int], bytes]) -> tuple[bytes, bytes]:
    """The subtree table as two flat byte strings: pickles in milliseconds, not seconds."""
    bounds = array("Q", [x for k in hashes for x in k]).tobytes()
    return bounds, b"".join(hashes.values())


def _init_worker(bounds: bytes, blob: bytes, heads: Sequence[tuple[int, bytes] | None],
                 events: Mapping[str, Sequence[KeyEvent]]) -> None:
    global _WORKER
    b = array("Q")
    b.frombytes(bounds)
    it = iter(b)
    table = {pair: blob[32 * i:32 * i + 32] for i, pair in enumerate(zip(it, it, strict=True))}
    _WORKER = Context(table, heads, events)


def _worker_chunk(jobs: Sequence[Job]) -> list[Result]:
    assert _WORKER is not None, "worker started without its context"
    return _WORKER.check(jobs)


#: what forked workers inherit instead of receiving it: (jobs, context); set only while the
#: pool's processes are being forked
_INHERITED: tuple[Sequence[Job], Context] | None = None


def _forked_chunk(bounds: tuple[int, int]) -> list[Result]:
    assert _INHERITED is not None, "forked worker without the parent's jobs"
    jobs, ctx = _INHERITED
    return ctx.check(jobs[bounds[0]:bounds[1]])


def _start_method() -> str:
    """``fork`` when this process has one thread (the ``fieldproof verify`` command): workers
    inherit the jobs and the subtree table instead of importing the verifier and receiving
    tens of megabytes, which saves ~0.5 s of start-up and most of the parent's pickling.
    ``forkserver`` otherwise: forking a process with other threads (the collector's API) can
    copy a lock some thread holds, and deadlock."""
    if threading.active_count() == 1 and "fork" in get_all_start_methods():
        return "fork"
    return "forkserver"


class MessageChecks:
    """Answers for ``jobs``, in order, a chunk at a time (iterate once).

    Past a few thousand messages over ``workers`` processes (default: all cores), which start
    at once, so the caller can do other work meanwhile (the verifier asks chain nodes about
    anchors, which is waiting, not computing); below that, or with one worker, each chunk is
    checked here when iteration reaches it. Use as a context manager, or call :meth:`close`:
    it stops the workers, also when the answers were not all read."""

    def __init__(self, jobs: Sequence[Job], ctx: Context, workers: int | None) -> None:
        self.jobs, self.ctx = jobs, ctx
        n = workers if workers is not None else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        self._answers: Iterator[list[Result]] | None = None
        if n > 1 and len(jobs) >= PARALLEL_MIN:
            bounds = [(i, min(i + CHUNK, len(jobs))) for i in range(0, len(jobs), CHUNK)]
            workers = min(n, len(bounds))
            if _start_method() == "fork":
                global _INHERITED
                _INHERITED = (jobs, ctx)
                try:
                    self._pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"))
                    # with fork, every worker is started by the first submission
                    self._answers = self._pool.map(_forked_chunk, bounds)
                finally:
                    _INHERITED = None
            else:
                self._pool = ProcessPoolExecutor(
                    workers, mp_context=get_context("forkserver"), initializer=_init_worker,
                    initargs=(*_pack_hashes(ctx.hashes), list(ctx.heads), dict(ctx.events)))
                self._answers = self._pool.map(_worker_chunk,
                                               [jobs[a:b] for a, b in bounds])  # all submitted

    def __iter__(self) -> Iterator[list[Result]]:
        if self._answers is None:
            for i in range(0, len(self.jobs), CHUNK):
                yield self.ctx.check(self.jobs[i:i + CHUNK])
            return
        try:
            yield from self._answers
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MessageChecks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_messages(jobs: Sequence[Job], ctx: Context, workers: int | None,
                   ) -> Iterator[list[Result]]:
    """Answers for ``jobs`` in order, a chunk at a time (see :class:`MessageChecks`)."""
    with MessageChecks(jobs, ctx, workers) as checks:
        yield from checks
