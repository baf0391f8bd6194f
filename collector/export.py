"""Export an evidence bundle (docs/bundle.md) from a collector's database and anchor stores.

The exporter runs at the operator's and is not trusted by the inspector: it only gathers what
the verifier checks. It reads the collector database read-only (the collector may keep running),
picks the gateways of a farm/field (from their enrollment events in the log, and from the
registry table for gateways enrolled before the log existed, so their messages show up as
unprovable rather than silently missing), every message of theirs whose sample times overlap
the period or that arrived during it (so a wrong gateway clock is flagged, not hidden), every
registry event of theirs, and for each entry the earliest *anchored*
checkpoint that covers it (the tightest time bound the chain gives). Entries newer than the
newest anchored checkpoint prove into the newest signed checkpoint if one covers them, else
they travel without a proof; the verifier flags both as outside the anchored range.

Checkpoints an inspector already trusts (``--since-checkpoint``) are checked against this log
and listed too, so the bundle's consistency proofs link them to its other checkpoints; EVM
anchors name their chain's genesis block when the configured node can be asked.
"""

from __future__ import annotations

import bisect
import itertools
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from anchor.evidence import EvidenceLog, StoredCheckpoint
from anchor.logkey import LogKeyError, load_or_create_log_key
from anchor.logstore import MerkleLog, SqliteLogStore
from collector.registry import Registry
from fieldproof.config import CollectorConfig
from fieldproof.formats import merkle
from fieldproof.formats.bundle import (
    AnchorRef,
    Bundle,
    BundleCheckpoint,
    Entry,
    Scope,
    encode_bundle,
)
from fieldproof.formats.checkpoint import CheckpointError, open_checkpoint
from fieldproof.formats.note import Ed25519Verifier, NoteError
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import SENML_BT, SENML_T, WireError, parse_sign1

__all__ = [
    "ExportError",
    "ExportStats",
    "build_bundle",
    "evm_genesis_of",
    "export_bundle",
    "list_scope",
    "log_vkey",
]

THOR_STORE = "anchors-thor.sqlite"
EVM_STORE = "anchors-evm.sqlite"
_PROOF_BATCH = 2000


class ExportError(ValueError):
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


def log_vkey(config: CollectorConfig) -> str:
    """The log's verifier key (public), read from the collector's key file."""
    path = config.log_key_file
    if not path.exists():
        raise ExportError(
            f"log key {path} not found: export runs where the collector's log key is (it only "
            "reads the public half) or set [log] key_file"
        )
    try:
        return load_or_create_log_key(path, config.log_origin).verifier().vkey
    except LogKeyError as exc:
        raise ExportError(str(exc)) from None


def _registry_events(db: sqlite3.Connection) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """Every registry event in the log, by gateway. Messages (0xd2…) are skipped in SQL."""
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    rows = db.execute(
        "SELECT idx, entry FROM fp_log_entries WHERE substr(entry, 1, 1) <> X'D2' ORDER BY idx"
    )
    for idx, entry in rows:
        event = parse_registry_event(bytes(entry))
        if event is not None and isinstance(event.get("gw"), str):
            out.setdefault(event["gw"], []).append((int(idx), event))
    return out


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
        for g in _gateways(db, _registry_events(db)):
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


def evm_genesis_of(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """(chain id, genesis block hash) an EVM node reports, so the bundle can name the network
    of its EVM anchors by more than a chain id (any dev chain or fork can reuse an id)."""
    from anchor.evm_reader import connect

    w3 = connect(url, timeout)
    chain_id = int(w3.eth.chain_id)
    block = w3.eth.get_block(0)
    return chain_id, "0x" + bytes(block["hash"]).hex()


def _configured_evm_genesis(config: CollectorConfig, notes: list[str]) -> dict[int, str]:
    """The genesis of the chain the collector anchors to, asked of its configured node; when
    that fails the bundle says so in its notes and its EVM anchors name only a chain id."""
    a = config.anchor
    if a.chain != "evm" or not a.url:
        return {}
    try:
        chain_id, genesis = evm_genesis_of(a.url)
    except Exception as exc:  # the export must not fail because a node is down
        notes.append(f"the EVM node could not be asked for its genesis block "
                     f"({type(exc).__name__}); EVM anchors name their chain id only")
        return {}
    if a.chain_id is not None and chain_id != a.chain_id:
        notes.append(f"the configured EVM node serves chain id {chain_id}, not {a.chain_id}; "
                     "EVM anchors name their chain id only")
        return {}
    return {chain_id: genesis}


def _anchor_refs(
    config: CollectorConfig, thor_store: Path | None, evm_store: Path | None,
    evm_genesis: Mapping[int, str] | None = None,
) -> dict[tuple[int, bytes], list[AnchorRef]]:
    """Finalized anchors of this log from both stores, keyed by (tree size, root)."""
    evm_genesis = evm_genesis or {}
    out: dict[tuple[int, bytes], list[AnchorRef]] = {}
    origin = config.log_origin
    thor_path = thor_store or config.data_dir / THOR_STORE
    if thor_path.exists():
        from anchor.anchoring import AnchorState, AnchorStore

        with AnchorStore(thor_path) as store:
            for a in store.anchors(AnchorState.FINALIZED):
                if a.origin != origin or None in (a.genesis_id, a.tx_id, a.block_id,
                                                  a.block_number, a.block_timestamp):
                    continue
                out.setdefault((a.tree_size, bytes(a.root_hash)), []).append(AnchorRef(
                    "thor", str(a.genesis_id).lower(), str(a.tx_id).lower(),
                    int(a.block_number or 0), str(a.block_id).lower(),
                    int(a.block_timestamp or 0)))
    evm_path = evm_store or config.data_dir / EVM_STORE
    if evm_path.exists():
        from anchor.evm import EvmAnchorStore

        estore = EvmAnchorStore(evm_path)
        try:
            for r in estore.rows(states=("finalized",)):
                if r.origin != origin or r.block_hash is None or r.block_number is None:
                    continue
                genesis = evm_genesis.get(int(r.chain_id))
                out.setdefault((r.tree_size, bytes(r.root_hash)), []).append(AnchorRef(
                    "evm", str(r.chain_id), str(r.tx_hash).lower(), int(r.block_number),
                    str(r.block_hash).lower(), int(r.block_timestamp or 0),
                    genesis.lower() if genesis else None))
        finally:
            estore.close()
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
    vkey = log_vkey(config)
    notes: list[str] = []
    if evm_genesis is None and (evm_store or config.data_dir / EVM_STORE).exists():
        evm_genesis = _configured_evm_genesis(config, notes)
    anchors = _anchor_refs(config, thor_store, evm_store, evm_genesis)
    db = _open_ro(config.db_path)
    try:
        evidence = EvidenceLog(db, config.log_origin, None)
        store = SqliteLogStore(db)
        log = MerkleLog(store)
        events = _registry_events(db)
        gateways = [
            g for g in _gateways(db, events)
            if (farm is None or g.farm == farm)
            and (field is None or g.field == field)
            and (gateway is None or g.gateway == gateway)
        ]
        if not gateways:
            wanted = ", ".join(f"{k}={v}" for k, v in
                               (("farm", farm), ("field", field), ("gateway", gateway)) if v)
            raise ExportError(f"no gateway is enrolled for {wanted or 'this collector'}")
        stats = ExportStats(gateways=[g.gateway for g in gateways])
        registry = sorted(
            (Entry(idx, log.entry(idx)) for g in gateways for idx, _ in events.get(g.gateway, [])),
            key=lambda e: e.index,
        )
        messages: list[Entry] = []
        for g in gateways:
            stats.unlogged_messages += int(db.execute(
                "SELECT count(*) FROM received WHERE gateway = ? AND log_index IS NULL",
                (g.gateway,)).fetchone()[0])
            rows = db.execute(
                "SELECT r.log_index, r.received_at, e.entry FROM received r"
                " JOIN fp_log_entries e ON e.idx = r.log_index"
                " WHERE r.gateway = ? AND r.log_index IS NOT NULL",
                (g.gateway,),
            )
            for idx, received_at, raw in rows:
                entry = bytes(raw)
                span = _sample_span(entry)
                # by sample time, and by arrival: a gateway whose clock was wrong still shows
                # up (and is flagged) instead of silently falling outside the period
                if (span is None or (span[1] >= start and span[0] <= end)
                        or start <= float(received_at) <= end):
                    messages.append(Entry(int(idx), entry))
        messages.sort(key=lambda e: e.index)

        needed = sorted([e.index for e in registry] + [e.index for e in messages])
        stored = evidence.checkpoints()
        chosen = _choose_checkpoints(stored, set(anchors), needed)
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
        if stats.unlogged_messages:
            notes.append(
                f"{stats.unlogged_messages} messages of these gateways were accepted before the "
                "evidence log existed; they cannot be proven and are not in this bundle"
            )
        bundle = Bundle(
            origin=config.log_origin,
            vkey=vkey,
            scope=Scope(farm, field, gateway, float(start), float(end)),
            created=time.time() if now is None else now,
            checkpoints=bundle_cps,
            consistency=consistency,
            hashes=hashes,
            registry=tuple(registry),
            messages=tuple(messages),
            notes=tuple(notes),
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
