"""Export an evidence bundle (docs/bundle.md) from a collector's database and anchor stores.

The exporter runs at the operator's and is not trusted by the inspector: it only gathers what
the verifier checks. It reads the collector database read-only (the collector may keep running)
and picks:

* the scope's gateways: every gateway any of whose enrollment events in the log names the
  farm/field (and, for gateways enrolled before the log existed, the registry table, so their
  messages show up as unprovable rather than silently missing);
* every registry event of the scope's gateways (their whole key history, below and above the
  newest signed checkpoint) and of no other gateway: another farm's gateway ids, locations,
  installers and sensors are that farm's data and never travel in this scope's bundle;
* per gateway, the run of its messages from its last one sampled wholly before the period to
  its first one sampled wholly after it (everything that arrived during the period is inside
  the run too, so a wrong gateway clock is flagged, not hidden), found with a few primary-key
  lookups on ``received (gateway, seq)``: the cost follows the period, not the gateway's
  history; and its messages logged after the newest checkpoint that belong to the period;
* for each entry the earliest *anchored* checkpoint that covers it (the tightest time bound the
  chain gives), and the newest signed checkpoint; entries newer than every checkpoint travel
  without a proof and the verifier flags them as outside the anchored range;
* the completeness claim (docs/bundle.md §4a), signed with the log key: how many registry
  events of the scope's gateways the log holds below the newest checkpoint, and per gateway its
  first and latest seq there, the run carried and how many messages the run holds;
* the completeness seal that ends that checkpoint (written by the collector before it signed
  it) with the scope's farm records and their inner proofs (:mod:`collector.export_seal`).

Checkpoints an inspector already trusts (``--since-checkpoint``) are checked against this log
and listed too, so the bundle's consistency proofs link them to its other checkpoints; EVM
anchors name their chain's genesis block when the configured node can be asked.
"""

from __future__ import annotations

import bisect
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cbor2

from anchor.chain import open_ledgers
from anchor.evidence import EvidenceLog, StoredCheckpoint
from anchor.logkey import LogKeyError, load_or_create_log_key
from anchor.logstore import MerkleLog, SqliteLogStore
from collector.export_seal import seal_for_export
from collector.registry import Registry
from fieldproof.config import CollectorConfig
from fieldproof.errors import ConfigError
from fieldproof.formats import merkle
from fieldproof.formats.bundle import (
    AnchorRef,
    Bundle,
    BundleCheckpoint,
    Entry,
    GatewayClaim,
    Scope,
    encode_bundle,
    in_scope,
    sign_completeness,
)
from fieldproof.formats.checkpoint import CheckpointError, open_checkpoint
from fieldproof.formats.note import Ed25519Signer, Ed25519Verifier, NoteError
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import MAX_SEQ, SENML_BT, SENML_T, WireError, parse_sign1

__all__ = [
    "ExportError",
    "ExportStats",
    "build_bundle",
    "evm_genesis_of",
    "export_bundle",
    "list_scope",
    "log_vkey",
]

_PROOF_BATCH = 2000


class ExportError(ConfigError):
    """The export cannot be made as asked; the message says what to change."""


@dataclass
class ExportStats:
    """What went into a bundle, for the CLI and the API to show."""

    gateways: list[str] = field(default_factory=list)
    messages: int = 0
    registry_events: int = 0
    checkpoints: int = 0
    anchored_checkpoints: int = 0
    unproven_entries: int = 0
    unlogged_messages: int = 0
    hashes: int = 0
    size: int = 0
    #: tree size the completeness claim speaks of (0: no claim, the log has no checkpoint)
    claim_size: int = 0
    #: messages decoded to find the period's ends (the rest are copied without decoding)
    decoded: int = 0


@dataclass(frozen=True)
class _Gateway:
    gateway: str
    farm: str
    field: str


def _open_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise ExportError(f"no collector database at {path}: check data_dir in the config")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    db.execute("PRAGMA synchronous=FULL")  # the log store refuses less, even for reading
    return db


def _log_signer(config: CollectorConfig) -> Ed25519Signer:
    """The log key, which signs the bundle's completeness claim (docs/bundle.md §4a)."""
    path = config.log_key_file
    if not path.exists():
        raise ExportError(
            f"log key {path} not found: export runs where the collector's log key is (it signs "
            "the bundle's completeness claim with it) or set [log] key_file"
        )
    try:
        return load_or_create_log_key(path, config.log_origin)
    except LogKeyError as exc:
        raise ExportError(str(exc)) from None


def log_vkey(config: CollectorConfig) -> str:
    """The log's verifier key (public), read from the collector's key file."""
    return _log_signer(config).verifier().vkey


def _registry_events(db: sqlite3.Connection) -> list[tuple[int, dict[str, Any]]]:
    """Every registry event in the log, in log order. Messages (0xd2…) are skipped in SQL."""
    out: list[tuple[int, dict[str, Any]]] = []
    rows = db.execute(
        "SELECT idx, entry FROM fp_log_entries WHERE substr(entry, 1, 1) <> X'D2' ORDER BY idx"
    )
    for idx, entry in rows:
        event = parse_registry_event(bytes(entry))
        if event is not None:
            out.append((int(idx), event))
    return out


def _by_gateway(
    events: Sequence[tuple[int, dict[str, Any]]],
) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for idx, e in events:
        if isinstance(e.get("gw"), str):
            out.setdefault(e["gw"], []).append((idx, e))
    return out


def _claimed_registry(
    events: Sequence[tuple[int, dict[str, Any]]], below: int, claimed: Iterable[str],
) -> int:
    """The claim's ``registry`` count (docs/bundle.md §4a): the registry events below tree size
    ``below`` of the scope's gateways that an ``enroll`` below it puts in the scope (the ones
    with a record), the count the verifier compares the bundle's carried ones with."""
    gateways = set(claimed)
    return sum(1 for idx, e in events if idx < below and e.get("gw") in gateways)


def _gateways(
    db: sqlite3.Connection, events: dict[str, list[tuple[int, dict[str, Any]]]]
) -> list[_Gateway]:
    found: dict[str, _Gateway] = {}
    for gw, evs in events.items():
        for _, e in evs:
            if e.get("event") == "enroll":
                found.setdefault(gw, _Gateway(gw, str(e.get("farm", "")), str(e.get("field", ""))))
    for d in Registry(db).all():
        found.setdefault(d.gateway, _Gateway(d.gateway, d.farm, d.field))
    return sorted(found.values(), key=lambda g: (g.farm, g.field, g.gateway))


def list_scope(config: CollectorConfig) -> dict[str, dict[str, list[str]]]:
    """farm → field → gateway ids known to the collector (for the inspector page)."""
    db = _open_ro(config.db_path)
    try:
        EvidenceLog(db, config.log_origin, None)
        out: dict[str, dict[str, list[str]]] = {}
        for g in _gateways(db, _by_gateway(_registry_events(db))):
            out.setdefault(g.farm, {}).setdefault(g.field, []).append(g.gateway)
        return out
    finally:
        db.close()


def _sample_span(entry: bytes) -> tuple[float, float] | None:
    """Earliest and latest sample time a message claims (unverified: only to pick the range)."""
    try:
        pack = cbor2.loads(parse_sign1(entry).payload)["e"]
        base = float(pack[0][SENML_BT])
        times = [base + float(rec.get(SENML_T, 0)) for rec in pack]
        return min(times), max(times)
    except (WireError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            cbor2.CBORDecodeError, OverflowError):
        return None


class _Rows:
    """One gateway's logged messages in the ``received`` table, walked by sequence number along
    its primary key (gateway, seq): a lookup costs O(log n) however long the history is.
    ``below``: only messages at log indices below it (the claim's tree size)."""

    def __init__(self, db: sqlite3.Connection, gateway: str, below: int | None) -> None:
        self.db = db
        self.gateway = gateway
        self.below = below
        self.cond = "log_index IS NOT NULL" + ("" if below is None else " AND log_index < ?")
        self.extra: tuple[int, ...] = () if below is None else (below,)
        self.spans: dict[int, tuple[float, float] | None] = {}
        self.decoded = 0

    def _one(self, sql: str, seq: int) -> tuple[int, int] | None:
        row = self.db.execute(sql.format(cond=self.cond),
                              (self.gateway, seq, *self.extra)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def at_or_after(self, seq: int) -> tuple[int, int] | None:
        """(seq, log index) of the first message with a seq ≥ ``seq``."""
        return self._one("SELECT seq, log_index FROM received WHERE gateway = ? AND seq >= ?"
                         " AND {cond} ORDER BY seq LIMIT 1", seq)

    def at_or_before(self, seq: int) -> tuple[int, int] | None:
        return self._one("SELECT seq, log_index FROM received WHERE gateway = ? AND seq <= ?"
                         " AND {cond} ORDER BY seq DESC LIMIT 1", seq)

    def walk(self, seq: int, *, up: bool) -> Iterator[tuple[int, int]]:
        """(seq, log index) from ``seq`` on, ascending (``up``) or descending."""
        op, order = (">=", "") if up else ("<=", " DESC")
        cur = self.db.execute(
            f"SELECT seq, log_index FROM received WHERE gateway = ? AND seq {op} ?"  # noqa: S608
            f" AND {self.cond} ORDER BY seq{order}", (self.gateway, seq, *self.extra))
        for s, i in cur:
            yield int(s), int(i)

    def span(self, index: int) -> tuple[float, float] | None:
        """The sample times a message claims (decoded once)."""
        if index not in self.spans:
            row = self.db.execute("SELECT entry FROM fp_log_entries WHERE idx = ?",
                                  (index,)).fetchone()
            self.decoded += 1
            self.spans[index] = None if row is None else _sample_span(bytes(row[0]))
        return self.spans[index]

    def lower_bound(self, lo: int, hi: int,
                    pred: Callable[[tuple[float, float] | None], bool]) -> tuple[int, int] | None:
        """The message with the lowest seq in ``lo..hi`` for which ``pred(span)`` holds,
        assuming it holds from some seq on (a gateway's clock moves forward with its seq):
        a binary search over seq values, each probe one primary-key lookup."""
        found: tuple[int, int] | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            row = self.at_or_after(mid)
            if row is None or row[0] > hi:
                hi = mid - 1
            elif pred(self.span(row[1])):
                found, hi = row, mid - 1
            else:
                lo = row[0] + 1
        return found


@dataclass(frozen=True)
class _Run:
    """What the bundle carries of one gateway: every logged message with a seq in
    ``from_seq``..``to_seq`` and, with a claim, the facts the claim states."""

    claim: GatewayClaim
    arrived: tuple[int, int] | None


def _select(db: sqlite3.Connection, gateway: str, start: float, end: float,
            below: int | None) -> tuple[_Run, _Rows]:
    """The run of a gateway's messages a bundle for ``start``..``end`` carries (docs/bundle.md
    §10): from its last message sampled wholly before the period to its first message sampled
    wholly after it, so a cut head or tail shows; everything that arrived during the period
    is inside the run too (a gateway whose clock is wrong is flagged, not left out). Cost: a few
    dozen primary-key lookups and decodes, plus one scan of the gateway's rows in SQL for the
    arrival times, whatever the length of its history."""
    rows = _Rows(db, gateway, below)
    first = rows.at_or_after(0)
    latest = rows.at_or_before(MAX_SEQ)
    if first is None or latest is None:
        return _Run(GatewayClaim(gateway, None, None, None, None, 0), None), rows
    arrived_row = db.execute(
        f"SELECT min(seq), max(seq) FROM received WHERE gateway = ? AND {rows.cond}"  # noqa: S608
        " AND received_at >= ? AND received_at <= ?",
        (gateway, *rows.extra, start, end)).fetchone()
    arrived = None if arrived_row[0] is None else (int(arrived_row[0]), int(arrived_row[1]))
    # the first message not wholly before the period, the first wholly after it
    begins = rows.lower_bound(first[0], latest[0], lambda s: s is None or s[1] >= start)
    after = rows.lower_bound(first[0], latest[0], lambda s: s is not None and s[0] > end)
    core: list[int] = []
    if begins is not None:
        last_in = latest if after is None else rows.at_or_before(after[0] - 1)
        if last_in is not None and last_in[0] >= begins[0]:
            core += [begins[0], last_in[0]]
    if arrived is not None:
        core += list(arrived)

    def down(seq: int) -> int:
        """The nearest message at or below ``seq`` sampled wholly before the period."""
        for s, i in rows.walk(seq, up=False):
            span = rows.span(i)
            if span is not None and span[1] < start:
                return s
        return first[0]

    def up(seq: int) -> int:
        for s, i in rows.walk(seq, up=True):
            span = rows.span(i)
            if span is not None and span[0] > end:
                return s
        return latest[0]

    if core:
        lo, hi = down(min(core) - 1), up(max(core) + 1)
    elif begins is None:  # every message before the period: its last one
        lo = hi = down(latest[0])
    else:  # none in it: the neighbours on both sides
        lo, hi = down(begins[0] - 1), up(begins[0])
    count = int(db.execute(
        f"SELECT count(*) FROM received WHERE gateway = ? AND {rows.cond}"  # noqa: S608
        " AND seq >= ? AND seq <= ?", (gateway, *rows.extra, lo, hi)).fetchone()[0])
    return _Run(GatewayClaim(gateway, first[0], latest[0], lo, hi, count), arrived), rows


def _carried(db: sqlite3.Connection, gateway: str, run: _Run, start: float, end: float,
             below: int | None) -> list[Entry]:
    """The run's messages (at any log index), and those logged at or above ``below`` (after
    the claim's checkpoint) that belong to the period by sample or arrival time."""
    c = run.claim
    out: list[Entry] = []
    if c.from_seq is not None:
        rows = db.execute(
            "SELECT r.log_index, e.entry FROM received r JOIN fp_log_entries e"
            " ON e.idx = r.log_index WHERE r.gateway = ? AND r.seq >= ? AND r.seq <= ?"
            " AND r.log_index IS NOT NULL", (gateway, c.from_seq, c.to_seq))
        out += [Entry(int(i), bytes(raw)) for i, raw in rows]
    if below is not None:
        lo, hi = (c.from_seq, c.to_seq) if c.from_seq is not None else (1, 0)
        rows = db.execute(
            "SELECT r.log_index, r.received_at, e.entry FROM received r JOIN fp_log_entries e"
            " ON e.idx = r.log_index WHERE r.gateway = ? AND r.log_index >= ?"
            " AND NOT (r.seq >= ? AND r.seq <= ?)", (gateway, below, lo, hi))
        for i, received_at, raw in rows:
            entry = bytes(raw)
            span = _sample_span(entry)
            if (span is None or (span[1] >= start and span[0] <= end)
                    or start <= float(received_at) <= end):
                out.append(Entry(int(i), entry))
    return out


def evm_genesis_of(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """(chain id, genesis block hash) an EVM node reports (:func:`anchor.evm_chain.evm_genesis_of`,
    loaded only when asked: web3 costs ~1 s to import)."""
    from anchor.evm_chain import evm_genesis_of as ask

    return ask(url, timeout)


def _anchor_refs(
    config: CollectorConfig, thor_store: Path | None, evm_store: Path | None,
    evm_genesis: Mapping[int, str] | None, notes: list[str],
) -> dict[tuple[int, bytes], list[AnchorRef]]:
    """Finalized anchors of this log from every chain's store, keyed by (tree size, root).
    An anchor whose row names no genesis block gets the one its network's node reports
    (``evm_genesis``: chain id → genesis, default: asked of the configured node)."""
    out: dict[tuple[int, bytes], list[AnchorRef]] = {}
    ledgers = open_ledgers(config, {"thor": thor_store, "evm": evm_store})
    try:
        genesis: dict[str, str] = {}
        if evm_genesis is not None:
            genesis = {str(k): v for k, v in evm_genesis.items()}
        else:
            for ledger in ledgers:
                genesis.update(ledger.genesis_by_network(config, notes))
        for ledger in ledgers:
            for row in ledger.rows():
                ref = row.ref
                if ref is None or row.origin != config.log_origin:
                    continue
                if ref.genesis_id is None and ref.network in genesis:
                    ref = replace(ref, genesis=genesis[ref.network].lower())
                out.setdefault((row.tree_size, bytes.fromhex(row.root_hash)), []).append(ref)
    finally:
        for ledger in ledgers:
            ledger.close()
    return out


def _fold_ranges(
    store: SqliteLogStore, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """MTH of each leaf range, from the stored perfect subtrees tiling it (one batch read)."""
    tilings = [merkle.range_nodes(b, e) for b, e in ranges]
    ids = list(dict.fromkeys(n for t in tilings for n in t))
    stored = dict(zip(ids, store.get_nodes(ids), strict=True))
    out = []
    for tiling in tilings:
        h = stored[tiling[-1]]
        for node in reversed(tiling[:-1]):
            h = merkle.node_hash(stored[node], h)
        out.append(h)
    return out


def _covering(sizes: Sequence[int], index: int) -> int | None:
    """Position of the first size > index in ascending ``sizes``."""
    pos = bisect.bisect_right(sizes, index)
    return pos if pos < len(sizes) else None


def _choose_checkpoints(
    checkpoints: Sequence[StoredCheckpoint],
    anchored: set[tuple[int, bytes]],
    needed: Iterable[int],
) -> list[StoredCheckpoint]:
    """For each needed index, the earliest anchored checkpoint covering it, else the earliest
    signed one; the verifier proves each entry into the first bundle checkpoint above it."""
    anchored_cps = [c for c in checkpoints
                    if (c.checkpoint.size, c.checkpoint.root_hash) in anchored]
    anchored_sizes = [c.checkpoint.size for c in anchored_cps]
    all_sizes = [c.checkpoint.size for c in checkpoints]
    chosen: dict[int, StoredCheckpoint] = {}
    for i in needed:
        pos = _covering(anchored_sizes, i)
        if pos is not None:
            c = anchored_cps[pos]
        else:
            pos = _covering(all_sizes, i)
            if pos is None:
                continue
            c = checkpoints[pos]
        chosen[c.checkpoint.size] = c
    return [chosen[s] for s in sorted(chosen)]


def _known_checkpoints(
    notes: Sequence[bytes], vkey: str, origin: str, log: MerkleLog,
    stored: Sequence[StoredCheckpoint],
) -> list[StoredCheckpoint]:
    """Checkpoints an inspector trusts, checked against this log before they go in a bundle:
    signed by its key, and its root at that size. A mismatch means this log is not the history
    the inspector saw, which the operator must learn here rather than from the inspector."""
    verifier = Ed25519Verifier.from_vkey(vkey)
    by_size = {c.checkpoint.size: c for c in stored}
    size = log.size()
    out = []
    for n, note in enumerate(notes, 1):
        try:
            cp = open_checkpoint(note, verifier, origin=origin)
        except (NoteError, CheckpointError) as exc:
            raise ExportError(f"--since-checkpoint #{n} is not a checkpoint of log {origin!r} "
                              f"signed by its key: {exc}") from None
        if cp.size == 0:
            raise ExportError(f"--since-checkpoint #{n} is of the empty log: every bundle "
                              "extends it, leave it out")
        if cp.size > size:
            raise ExportError(
                f"--since-checkpoint #{n} has tree size {cp.size}, but this log holds "
                f"{size} entries: it is from another log, or this log lost entries")
        root = log.root(cp.size)
        if root != cp.root_hash:
            raise ExportError(
                f"--since-checkpoint #{n} says the root at size {cp.size} is "
                f"{cp.root_hash.hex()}, this log's root at that size is {root.hex()}: this "
                "log's history differs from the one that checkpoint fixed (rewritten or "
                "forked), so no bundle of it can be linked to that checkpoint")
        mine = by_size.get(cp.size)
        out.append(mine if mine is not None and mine.checkpoint.root_hash == root
                   else StoredCheckpoint(cp, bytes(note), 0.0))
    return out


def build_bundle(
    config: CollectorConfig,
    *,
    farm: str | None,
    field: str | None,
    gateway: str | None,
    start: float,
    end: float,
    thor_store: Path | None = None,
    evm_store: Path | None = None,
    now: float | None = None,
    since: Sequence[bytes] = (),
    evm_genesis: Mapping[int, str] | None = None,
) -> tuple[Bundle, ExportStats]:
    """Gather the bundle for a farm/field/gateway and period from the collector's data.

    ``since``: signed checkpoints an inspector already trusts (``--since-checkpoint``); each
    is put in the bundle's checkpoint list, so the bundle's consistency proofs link it to
    every later checkpoint. ``evm_genesis``: chain id → genesis block hash for EVM anchors
    (default: asked of the collector's configured EVM node)."""
    if start > end:
        raise ExportError("the period starts after it ends: check --from and --to")
    signer = _log_signer(config)
    vkey = signer.verifier().vkey
    notes: list[str] = []
    anchors = _anchor_refs(config, thor_store, evm_store, evm_genesis, notes)
    scope = Scope(farm, field, gateway, float(start), float(end))
    db = _open_ro(config.db_path)
    try:
        evidence = EvidenceLog(db, config.log_origin, None)
        store = SqliteLogStore(db)
        log = MerkleLog(store)
        stored = evidence.checkpoints()
        # the completeness claim is about the log below its newest signed checkpoint
        head = stored[-1] if stored else None
        below = head.checkpoint.size if head is not None else None
        events = _registry_events(db)
        by_gw = _by_gateway(events)
        enrolled = {gw for gw, evs in by_gw.items() if any(in_scope(scope, gw, e) for _, e in evs)}
        claimed = sorted(gw for gw in enrolled if below is not None
                         and any(i < below and in_scope(scope, gw, e) for i, e in by_gw[gw]))
        # gateways enrolled before the log existed have no registry event; their messages go
        # in (and are flagged as unprovable) rather than silently missing
        legacy = {d.gateway for d in Registry(db).all()
                  if d.gateway not in by_gw and (farm is None or d.farm == farm)
                  and (field is None or d.field == field)
                  and (gateway is None or d.gateway == gateway)}
        gateways = sorted(enrolled | legacy)
        if not gateways:
            wanted = ", ".join(f"{k}={v}" for k, v in
                               (("farm", farm), ("field", field), ("gateway", gateway)) if v)
            raise ExportError(f"no gateway is enrolled for {wanted or 'this collector'}")
        stats = ExportStats(gateways=gateways)
        # every registry event of the scope's gateways (their whole key history) and none of
        # any other gateway: other farms' gateways, locations and installers stay out
        registry = [Entry(idx, log.entry(idx)) for idx, e in events if e.get("gw") in enrolled]
        messages: list[Entry] = []
        records: list[GatewayClaim] = []
        for gw in gateways:
            stats.unlogged_messages += int(db.execute(
                "SELECT count(*) FROM received WHERE gateway = ? AND log_index IS NULL",
                (gw,)).fetchone()[0])
            bound = below if gw in claimed else None
            run, rows = _select(db, gw, start, end, bound)
            stats.decoded += rows.decoded
            messages += _carried(db, gw, run, start, end, bound)
            if bound is not None:
                records.append(run.claim)
        messages.sort(key=lambda e: e.index)

        # the seal ending the claim's checkpoint (docs/bundle.md §4b), proven like an entry
        seal = seal_for_export(evidence, log, below, scope, notes) if below else None
        needed = sorted([e.index for e in registry] + [e.index for e in messages]
                        + ([seal.size - 1] if seal is not None else []))
        chosen = _choose_checkpoints(stored, set(anchors), needed)
        if head is not None and all(c.checkpoint.size != head.checkpoint.size for c in chosen):
            chosen.append(head)
        if since:
            known = _known_checkpoints(since, vkey, config.log_origin, log, stored)
            by_size = {c.checkpoint.size: c for c in chosen}
            for c in known:
                by_size.setdefault(c.checkpoint.size, c)
            chosen = [by_size[k] for k in sorted(by_size)]
        sizes = [c.checkpoint.size for c in chosen]
        consistency = tuple(
            tuple(log.consistency_proof(a, b)) for a, b in itertools.pairwise(sizes)
        )
        hashes: dict[tuple[int, int], bytes] = {}
        pending: list[tuple[int, int]] = []
        for i in needed:
            pos = _covering(sizes, i)
            if pos is None:
                stats.unproven_entries += 1
                continue
            for r in merkle.inclusion_proof_ranges(i, sizes[pos]):
                if r not in hashes:
                    hashes[r] = b""
                    pending.append(r)
            if len(pending) >= _PROOF_BATCH:
                hashes.update(zip(pending, _fold_ranges(store, pending), strict=True))
                pending = []
        if pending:
            hashes.update(zip(pending, _fold_ranges(store, pending), strict=True))

        bundle_cps = tuple(
            BundleCheckpoint(
                c.note,
                tuple(anchors.get((c.checkpoint.size, c.checkpoint.root_hash), [])),
            )
            for c in chosen
        )
        completeness = None
        if head is not None and below is not None:
            completeness = sign_completeness(
                signer, config.log_origin, head.checkpoint.root_hash, scope, below,
                _claimed_registry(events, below, claimed), records)
            stats.claim_size = below
        else:
            notes.append("the log has no signed checkpoint yet, so this bundle carries no "
                         "completeness claim: nothing in it is proven")
        if stats.unlogged_messages:
            notes.append(
                f"{stats.unlogged_messages} messages of these gateways were accepted before the "
                "evidence log existed; they cannot be proven and are not in this bundle"
            )
        bundle = Bundle(
            origin=config.log_origin,
            vkey=vkey,
            scope=scope,
            created=time.time() if now is None else now,
            checkpoints=bundle_cps,
            consistency=consistency,
            hashes=hashes,
            registry=tuple(registry),
            messages=tuple(messages),
            notes=tuple(notes),
            completeness=completeness,
            seal=seal,
        )
    finally:
        db.close()
    stats.messages = len(messages)
    stats.registry_events = len(registry)
    stats.checkpoints = len(bundle_cps)
    stats.anchored_checkpoints = sum(1 for c in bundle_cps if c.anchors)
    stats.hashes = len(hashes)
    return bundle, stats


def export_bundle(
    config: CollectorConfig,
    *,
    farm: str | None,
    field: str | None,
    gateway: str | None,
    start: float,
    end: float,
    since: Sequence[bytes] = (),
    evm_genesis: Mapping[int, str] | None = None,
) -> bytes:
    """The encoded bundle (docs/bundle.md) for a farm/field/gateway and period."""
    bundle, _ = build_bundle(
        config, farm=farm, field=field, gateway=gateway, start=start, end=end, since=since,
        evm_genesis=evm_genesis,
    )
    return encode_bundle(bundle)
