"""The completeness seal: a log entry the collector appends just before it signs a checkpoint,
so the checkpoint's last leaf fixes, on chain, what the log held per farm and gateway
(docs/evidence-log.md §11, docs/bundle.md §4b).

Why a seal and not only the exporter's signed claim: the claim is written at export time, when
the operator already knows what an inspector will look for; the seal was anchored before. It
holds the root of an inner RFC 9162 tree over one *farm record* per farm (sorted by farm), so a
bundle carries its own farm's record with an inner inclusion proof and never another farm's.

A seal is a deterministic-CBOR map whose ``"t"`` is :data:`SEAL_TYPE`; it can never be a
signed message (those start with tag 18, byte 0xd2) or a registry event (another ``"t"``).
Everything it says is a pure function of the log entries before it (:class:`SealAccumulator`),
so anyone holding the log (a mirror) can recompute every seal. Decoding is bounded: item heads
are walked and counted before anything is built."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fieldproof.errors import FormatError
from fieldproof.formats import merkle
from fieldproof.formats.cbor import WireError, decode_deterministic, encode_deterministic, scan_cbor
from fieldproof.formats.message import open_message
from fieldproof.formats.payload import plain_payload_from_cbor
from fieldproof.formats.registry_event import parse_registry_event

__all__ = [
    "FARM_RECORD_TYPE",
    "MAX_FARMS",
    "MAX_GATEWAYS_PER_FARM",
    "SEAL_TYPE",
    "FarmRecord",
    "Seal",
    "SealAccumulator",
    "SealError",
    "SealedGateway",
    "decode_farm_record",
    "decode_seal",
    "farm_proofs",
    "farms_root",
    "gateway_covered",
    "gateway_positions",
    "is_seal_entry",
    "scope_covered",
    "scope_positions",
    "verify_farm_record",
]

SEAL_TYPE = "fieldproof/seal/v1"
FARM_RECORD_TYPE = "fieldproof/seal-farm/v1"
#: bounds a decoder applies, whatever a file says
MAX_FARMS = 100_000
MAX_GATEWAYS_PER_FARM = 100_000
MAX_TEXT = 1024
MAX_FIELDS_PER_GATEWAY = 64
MAX_SEAL_BYTES = 256
MAX_RECORD_BYTES = 8 << 20  # a bundle carries a record within its claim limit
MAX_SEQ = 2**63 - 1
HASH_SIZE = 32


class SealError(FormatError):
    """Bytes that are not a seal or farm record of this version; the text says why."""


@dataclass(frozen=True, slots=True)
class SealedGateway:
    """One gateway as its farm record states it, about the log's entries below the seal:
    the fields its ``enroll`` events name in this farm, its lowest and highest message seq
    (None: no message), how many messages it has there and how many registry events of any
    kind (every farm)."""

    gateway: str
    fields: tuple[str, ...]
    first: int | None
    latest: int | None
    messages: int
    registry: int

    def to_obj(self) -> list[Any]:
        return [self.gateway, list(self.fields), self.first, self.latest, self.messages,
                self.registry]

    @property
    def dense(self) -> bool:
        """Whether the log holds every seq from ``first`` to ``latest``, if it holds no seq
        twice: :meth:`every_seq` with no duplicate shown."""
        return self.every_seq(0)

    def every_seq(self, duplicates: int) -> bool:
        """Whether the log holds every seq from ``first`` to ``latest``, given ``duplicates``
        entries beyond one per seq that a bundle proves (a seq proven at two log indices
        counts one). ``messages`` counts entries, so a seq held twice stands in for a missing
        one: only ``messages − duplicates`` seqs are known to be distinct. A duplicate the
        bundle does not show is not subtracted (the seal counts no distinct seqs), so this
        says "every seq, or as many more seqs held twice as the log lacks" (docs/bundle.md
        §4b)."""
        return (self.first is not None and self.latest is not None
                and self.messages - duplicates == self.latest - self.first + 1)


@dataclass(frozen=True)
class FarmRecord:
    """A leaf of the seal's inner tree: one farm and every gateway an ``enroll`` event below
    the seal puts in it, sorted by gateway id."""

    farm: str
    gateways: tuple[SealedGateway, ...]

    def encode(self) -> bytes:
        return encode_deterministic({
            "t": FARM_RECORD_TYPE,
            "farm": self.farm,
            "gateways": [g.to_obj() for g in sorted(self.gateways, key=lambda g: g.gateway)],
        })


@dataclass(frozen=True)
class Seal:
    """The log entry at index ``size``: it describes entries ``0 … size − 1``; ``farms`` farm
    records (sorted by farm) have inner-tree root ``root``."""

    size: int
    farms: int
    root: bytes

    def encode(self) -> bytes:
        return encode_deterministic(
            {"t": SEAL_TYPE, "size": self.size, "farms": self.farms, "root": self.root})


# ----------------------------------------------------------------------------- inner tree


def farms_root(records: Sequence[bytes]) -> bytes:
    """MTH over the encoded farm records (RFC 9162; the empty tree's root when none)."""
    return merkle.root_from_leaves(records)


def farm_proofs(records: Sequence[bytes], positions: Iterable[int]) -> list[list[bytes]]:
    """The inner inclusion proofs (RFC 9162 PATH) of the records at ``positions``; each
    subtree hash is computed once, so proving every record costs O(n log n), not O(n²)."""
    leaves = [merkle.leaf_hash(r) for r in records]
    cache: dict[tuple[int, int], bytes] = {}

    def mth(begin: int, end: int) -> bytes:
        if end - begin == 1:
            return leaves[begin]
        got = cache.get((begin, end))
        if got is None:
            k = merkle.largest_power_of_two_below(end - begin)
            got = cache[(begin, end)] = merkle.node_hash(mth(begin, begin + k), mth(begin + k, end))
        return got

    return [[mth(b, e) for b, e in merkle.inclusion_proof_ranges(p, len(records))]
            for p in positions]


def scope_positions(farms: Sequence[str], farm: str | None) -> list[int]:
    """Which records (by position; ``farms`` is every record's farm, sorted) a bundle for
    ``farm`` carries: that farm's; if it has none, the neighbours that prove it absent (the
    records just below and above where it would sort); every record when ``farm`` is None."""
    if farm is None:
        return list(range(len(farms)))
    i = bisect.bisect_left(farms, farm)
    if i < len(farms) and farms[i] == farm:
        return [i]
    return [p for p in (i - 1, i) if 0 <= p < len(farms)]


def scope_covered(count: int, carried: Mapping[int, str], farm: str | None) -> str | None:
    """Whether records carried at these positions (position → farm; each already proven into
    a seal of ``count`` records) show every record of ``farm`` (None: of every farm): None if
    they do, else what is missing."""
    bad = _unsorted(carried)
    if bad is not None:
        return bad
    order = sorted(carried)
    if farm is None:
        missing = count - len(carried)
        return None if missing == 0 else f"{missing} of the seal's {count} farm records"
    if farm in carried.values() or count == 0:
        return None
    below = [p for p in order if carried[p] < farm]
    above = [p for p in order if carried[p] > farm]
    lo = below[-1] if below else -1
    hi = above[0] if above else count
    if hi == lo + 1:
        return None
    return f"the record of farm {farm!r}, or the neighbouring records that show it has none"


def gateway_positions(records: Sequence[FarmRecord], gateway: str,
                      field: str | None = None) -> list[int] | None:
    """Which records a bundle scoped to one ``gateway`` (no farm) carries: those that list it,
    when some do (and, with a ``field``, one lists it in that field); None when none does, so
    only every record can show it is in none (docs/bundle.md §4b). The verifier knows the
    gateway's other farms from its registry events, which the seal counts
    (:func:`gateway_covered`)."""
    out: list[int] = []
    fields: set[str] = set()
    for p, r in enumerate(records):
        for g in r.gateways:
            if g.gateway == gateway:
                out.append(p)
                fields.update(g.fields)
    if not out or (field is not None and field not in fields):
        return None
    return out


def _unsorted(carried: Mapping[int, str]) -> str | None:
    for a, b in itertools.pairwise(sorted(carried)):
        if carried[a] >= carried[b]:
            return f"records {a} and {b} are not sorted by farm"
    return None


def gateway_covered(count: int, carried: Mapping[int, FarmRecord], gateway: str,
                    enrolled: Mapping[str, int]) -> str | None:
    """Whether records carried at these positions (each proven into a seal of ``count``
    records) show every record that lists ``gateway``: None if they do, else what is missing.

    A gateway is in a farm's record exactly when one of its ``enroll`` events below the seal
    names that farm, and every record listing it states how many registry events of it the log
    holds below the seal. So with every such event in hand (``enrolled``: farm → log index of
    a carried ``enroll`` of it below the seal; the caller holds the carried events to that
    count, else they were withheld) the records needed are those of ``enrolled``'s farms, and
    one carried record listing the gateway is needed to know the count. Without any, only
    every record shows the gateway is in none. :class:`SealError` when the records state
    different numbers for it (the seal writes one set per gateway)."""
    bad = _unsorted({p: r.farm for p, r in carried.items()})
    if bad is not None:
        return bad
    rows = {g for r in carried.values() for g in r.gateways if g.gateway == gateway}
    if len({(g.first, g.latest, g.messages, g.registry) for g in rows}) > 1:
        raise SealError(f"its farm records state different numbers for {gateway}, which a seal "
                        "never does")
    if len(carried) == count:
        return None
    listing = {r.farm for r in carried.values() if any(g.gateway == gateway for g in r.gateways)}
    if not listing:
        return (f"a farm record listing {gateway}, or every record (which would show that none "
                "lists it)")
    for farm, index in sorted(enrolled.items(), key=lambda x: x[1]):
        if farm not in listing:
            return (f"the record of farm {farm!r}, in which {gateway}'s enrollment at log index "
                    f"{index} puts it")
    return None


def verify_farm_record(record: bytes, position: int, seal: Seal, proof: Sequence[bytes]) -> None:
    """:class:`SealError` unless ``record`` is leaf ``position`` of the seal's inner tree."""
    try:
        merkle.verify_inclusion(merkle.leaf_hash(record), position, seal.farms, list(proof),
                                seal.root)
    except merkle.ProofError as exc:
        raise SealError(f"farm record {position} is not in the seal's tree: {exc}") from None


# ----------------------------------------------------------------------------- decoding


def is_seal_entry(entry: bytes) -> bool:
    """Whether a log entry is a seal (by its type tag), without raising on any bytes."""
    if not entry or entry[0] == 0xD2 or len(entry) > MAX_SEAL_BYTES:
        return False
    try:
        decode_seal(entry)
    except SealError:
        return False
    return True


def _decode(data: bytes, what: str, max_bytes: int, max_items: int) -> Any:
    if not isinstance(data, bytes) or not data or len(data) > max_bytes:
        raise SealError(f"{what} must be 1..{max_bytes:,} bytes")
    try:
        scan_cbor(data, what, max_depth=4, max_items=max_items)
        return decode_deterministic(data, what)
    except WireError as exc:
        raise SealError(str(exc)) from None


def _map(obj: Any, what: str, keys: set[str], kind: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("t") != kind:
        raise SealError(f"{what} is not a map with t = {kind!r}")
    if set(obj) != keys:
        raise SealError(f"{what} must have exactly the fields {', '.join(sorted(keys))}")
    return obj


def _uint(obj: Any, what: str, limit: int = MAX_SEQ) -> int:
    if type(obj) is not int or not 0 <= obj <= limit:
        raise SealError(f"{what} must be an unsigned integer up to {limit}")
    return obj


def _text(obj: Any, what: str) -> str:
    if not isinstance(obj, str) or len(obj) > MAX_TEXT or any(
            ord(c) < 0x20 or c == "\x7f" for c in obj):
        raise SealError(f"{what} must be text of at most {MAX_TEXT} characters, no control "
                        "characters")
    return obj


def decode_seal(data: bytes) -> Seal:
    """A seal entry's fields; :class:`SealError` if the bytes are not exactly one."""
    m = _map(_decode(data, "seal", MAX_SEAL_BYTES, 16), "seal",
             {"t", "size", "farms", "root"}, SEAL_TYPE)
    root = m["root"]
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise SealError(f"seal root must be a {HASH_SIZE}-byte hash")
    farms = _uint(m["farms"], "seal farms", MAX_FARMS)
    if farms == 0 and root != merkle.EMPTY_ROOT:
        raise SealError("a seal of no farm must have the empty tree's root")
    return Seal(_uint(m["size"], "seal size"), farms, root)


def decode_farm_record(data: bytes) -> FarmRecord:
    """A farm record's fields, checked: gateways sorted and unique, seqs consistent."""
    m = _map(_decode(data, "farm record", MAX_RECORD_BYTES,
                     8 + MAX_GATEWAYS_PER_FARM * (8 + MAX_FIELDS_PER_GATEWAY)),
             "farm record", {"t", "farm", "gateways"}, FARM_RECORD_TYPE)
    farm = _text(m["farm"], "farm record farm")
    rows = m["gateways"]
    if not isinstance(rows, list) or len(rows) > MAX_GATEWAYS_PER_FARM:
        raise SealError(f"farm record gateways must be a list of at most "
                        f"{MAX_GATEWAYS_PER_FARM:,}")
    out: list[SealedGateway] = []
    for i, row in enumerate(rows):
        what = f"farm record {farm!r} gateways[{i}]"
        if not isinstance(row, list) or len(row) != 6:
            raise SealError(f"{what} must be [gateway, fields, first, latest, messages, "
                            "registry]")
        gw = _text(row[0], f"{what} gateway")
        if not gw or (out and gw <= out[-1].gateway):
            raise SealError(f"{what}: gateways must be non-empty ids, sorted, each once")
        fields = row[1]
        if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS_PER_GATEWAY:
            raise SealError(f"{what} fields must list 1..{MAX_FIELDS_PER_GATEWAY} fields")
        names = tuple(_text(f, f"{what} field") for f in fields)
        if list(names) != sorted(set(names)):
            raise SealError(f"{what} fields must be sorted, each once")
        first = None if row[2] is None else _uint(row[2], f"{what} first")
        latest = None if row[3] is None else _uint(row[3], f"{what} latest")
        messages = _uint(row[4], f"{what} messages")
        registry = _uint(row[5], f"{what} registry")
        if (first is None) != (latest is None):
            raise SealError(f"{what} must name both first and latest, or neither")
        if first is None and messages:
            raise SealError(f"{what} counts messages but names no seq")
        # messages may exceed latest − first + 1: a log can hold two messages with one seq (a
        # gateway that signed a conflict); the seal counts entries, the verifier judges them
        if first is not None and latest is not None and (first > latest or messages < 1):
            raise SealError(f"{what} must have first ≤ latest and at least 1 message")
        if registry == 0:
            raise SealError(f"{what} has no registry event, so nothing enrolls it here")
        out.append(SealedGateway(gw, names, first, latest, messages, registry))
    return FarmRecord(farm, tuple(out))


# ----------------------------------------------------------------------------- writing


def _seq_of(gateway: str, payload: bytes) -> int | None:
    """The seq a logged message's payload claims (the collector checked it on arrival), by
    the payload's own strict reader (its fast path for what gateways write); None when the
    payload is not a valid one of ``gateway``."""
    try:
        gw, seq, _, _ = plain_payload_from_cbor(payload)
    except (FormatError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, RecursionError):
        return None
    return seq if gw == gateway and type(seq) is int and 0 <= seq <= MAX_SEQ else None


@dataclass
class _GatewayState:
    farms: dict[str, set[str]] = field(default_factory=dict)
    first: int | None = None
    latest: int | None = None
    messages: int = 0
    registry: int = 0


class SealAccumulator:
    """What a seal states, folded entry by entry in log order: the writer keeps one across
    checkpoints (persisted with :meth:`to_obj`), a monitor can rebuild it from the log.

    Entries that are neither a registry event nor a message (a seal, anything else) count for
    nothing; a message of a gateway no ``enroll`` event names lands in no farm record."""

    def __init__(self) -> None:
        self.size = 0
        self.gateways: dict[str, _GatewayState] = {}

    def add(self, entries: Iterable[bytes]) -> None:
        for entry in entries:
            self._add(entry)
            self.size += 1

    def _add(self, entry: bytes) -> None:
        if entry[:1] == b"\xd2":
            try:
                gw, sign1 = open_message(entry)
            except (FormatError, ValueError):
                return
            seq = _seq_of(gw, sign1.payload)
            if seq is None:
                return
            g = self.gateways.setdefault(gw, _GatewayState())
            g.first = seq if g.first is None else min(g.first, seq)
            g.latest = seq if g.latest is None else max(g.latest, seq)
            g.messages += 1
            return
        event = parse_registry_event(entry)
        if event is None or not isinstance(event.get("gw"), str):
            return
        g = self.gateways.setdefault(event["gw"], _GatewayState())
        g.registry += 1
        if event.get("event") == "enroll":
            farm, fld = event.get("farm", ""), event.get("field", "")
            g.farms.setdefault(str(farm), set()).add(str(fld))

    def records(self) -> list[FarmRecord]:
        """One record per farm, sorted by farm (the inner tree's leaf order)."""
        farms: dict[str, list[SealedGateway]] = {}
        for gw, g in self.gateways.items():
            for farm, fields in g.farms.items():
                farms.setdefault(farm, []).append(SealedGateway(
                    gw, tuple(sorted(fields)), g.first, g.latest, g.messages, g.registry))
        return [FarmRecord(f, tuple(sorted(gs, key=lambda x: x.gateway)))
                for f, gs in sorted(farms.items())]

    def seal(self) -> tuple[Seal, list[bytes]]:
        """The seal for the entries added so far (it goes at index ``size``) and the encoded
        farm records its root covers."""
        encoded = [r.encode() for r in self.records()]
        return Seal(self.size, len(encoded), farms_root(encoded)), encoded

    def to_obj(self) -> dict[str, Any]:
        """Plain CBOR-able state, so the writer need not re-read the log after a restart."""
        return {"size": self.size, "gateways": {
            gw: [{f: sorted(v) for f, v in g.farms.items()}, g.first, g.latest, g.messages,
                 g.registry] for gw, g in self.gateways.items()}}

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> SealAccumulator:
        acc = cls()
        acc.size = int(obj["size"])
        for gw, (farms, first, latest, messages, registry) in obj["gateways"].items():
            acc.gateways[gw] = _GatewayState(
                {f: set(v) for f, v in farms.items()}, first, latest, int(messages),
                int(registry))
        return acc

