"""The evidence bundle: one self-contained, versioned CBOR file an inspector verifies offline.

A bundle carries what a verifier needs and nothing it must trust: the signed messages (exact
bytes) with their log indices, the registry events they depend on, the signed checkpoints with
their anchor references, consistency proofs between successive checkpoints, the subtree hashes
that make up every inclusion proof, (version 2) the exporter's completeness claim, signed
with the log key, and (version 3) the completeness seal of the claim's checkpoint with the
scope's farm records (:mod:`fieldproof.formats.seal`). docs/bundle.md is the byte-level
description; this module is its only encoder and a strict, hostile-input-safe decoder.

Parsing never trusts the bytes and never lets them choose how much memory it takes: the decoder
reads the CBOR item heads itself, checks every declared length and count against the bytes left
and against :class:`Limits` *before* it builds anything, and builds only the objects the format
defines (entries, hashes, checkpoints), so a hostile file costs a bounded multiple of its own
size (``tests/fieldproof/test_bundle_bounds.py`` measures it). Definite lengths only, no tags,
nesting within the fixed shape of the format; any contradiction (duplicate index, unsorted
list, one subtree with two hashes) rejects the bundle with a :class:`BundleError` that says what
is wrong. Nothing cryptographic happens here: that is :mod:`inspector.verify`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from fieldproof.errors import FormatError
from fieldproof.formats.note import Signer, sign_note
from fieldproof.formats.tiles import MAX_ENTRY_BYTES

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "CLAIM_TYPE",
    "MEDIA_TYPE",
    "READABLE_VERSIONS",
    "AnchorRef",
    "Bundle",
    "BundleCheckpoint",
    "BundleError",
    "ClaimNote",
    "Completeness",
    "Entry",
    "GatewayClaim",
    "Limits",
    "Scope",
    "SealFarm",
    "SealProof",
    "decode_bundle",
    "encode_bundle",
    "encode_claim",
    "in_scope",
    "parse_claim_note",
    "sign_completeness",
]

BUNDLE_FORMAT = "fieldproof/bundle"
#: the version this code writes
BUNDLE_VERSION = 3
#: the versions this code reads (1: no completeness claim; verified, flagged as unproven;
#: 2: a claim but no seal, flagged as not provable)
READABLE_VERSIONS = (1, 2, 3)
MEDIA_TYPE = "application/vnd.fieldproof.bundle+cbor"
#: first line of the completeness claim's signed note, and the claim's ``t``
CLAIM_TYPE = "fieldproof/completeness/v1"
HASH_SIZE = 32
MAX_UINT64 = 2**64 - 1
#: nothing shorter can be a signed message (its signature alone is 64 bytes) or a registry
#: event (the shortest, a revocation, is 76 bytes)
MIN_ENTRY_BYTES = 64
CHAINS = ("thor", "evm")
_HEX32 = re.compile(r"^0x[0-9a-f]{64}$")
_GATEWAY_ID = re.compile(r"^gw-[0-9a-f]{16}$")
_MAX_DEPTH = 8


class BundleError(FormatError):
    """The bytes are not a well-formed bundle of a version this code reads; the text says why."""


@dataclass(frozen=True)
class Limits:
    """Upper bounds on every part of a bundle, so a hostile file costs bounded memory and time.

    The defaults fit a year of one-minute messages from a few hundred gateways; raise them
    explicitly for bigger exports rather than trusting what a file claims."""

    max_bytes: int = 1 << 30
    max_messages: int = 2_000_000
    max_registry_events: int = 100_000
    max_checkpoints: int = 200_000
    max_anchors_per_checkpoint: int = 8
    max_hashes: int = 16_000_000
    #: a log entry is at most 65,535 bytes (a tlog-tiles entry bundle's 16-bit length)
    max_entry_bytes: int = MAX_ENTRY_BYTES
    max_note_bytes: int = 64 * 1024
    max_text: int = 1024
    max_proof_hashes: int = 128
    max_claim_bytes: int = 8 << 20
    max_seal_farms: int = 10_000


@dataclass(frozen=True)
class Scope:
    """What the exporter was asked for: farm/field/gateway (None = all) and a time range."""

    farm: str | None
    field: str | None
    gateway: str | None
    start: float
    end: float

    def to_obj(self) -> dict[str, Any]:
        return {"farm": self.farm, "field": self.field, "gateway": self.gateway,
                "from": float(self.start), "to": float(self.end)}


def in_scope(scope: Scope, gateway: str, event: Mapping[str, Any]) -> bool:
    """Whether a registry event (parsed, unverified) enrolls ``gateway`` into ``scope``: an
    ``enroll`` naming the scope's farm and field (each when set), of the scope's gateway (when
    set). A gateway is in a scope when *any* of its enrollments is (docs/bundle.md §4)."""
    return (event.get("event") == "enroll"
            and (scope.gateway is None or gateway == scope.gateway)
            and (scope.farm is None or event.get("farm") == scope.farm)
            and (scope.field is None or event.get("field") == scope.field))


@dataclass(frozen=True)
class AnchorRef:
    """Where a checkpoint is said to be anchored. Claims only: the verifier asks the chain.

    ``network`` is the genesis block id for Thor, the decimal chain id for EVM chains. An EVM
    anchor may also name its chain's ``genesis`` block hash: a chain id alone does not tell a
    network from a copy of it (a dev chain or fork reusing the id), the genesis block does."""

    chain: str
    network: str
    tx: str
    block_number: int
    block_id: str
    block_time: int
    genesis: str | None = None

    @property
    def genesis_id(self) -> str | None:
        """The genesis block the anchor claims (Thor: always; EVM: when recorded)."""
        return self.network if self.chain == "thor" else self.genesis

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"chain": self.chain, "tx": self.tx}
        if self.chain == "thor":
            obj["genesis"] = self.network
        else:
            obj["chain_id"] = int(self.network)
            if self.genesis is not None:
                obj["genesis"] = self.genesis
        obj.update(block_number=self.block_number, block_id=self.block_id,
                   block_time=self.block_time)
        return obj


@dataclass(frozen=True, slots=True)
class BundleCheckpoint:
    note: bytes
    anchors: tuple[AnchorRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry as carried: its index in the log and its exact bytes."""

    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class GatewayClaim:
    """What the exporter claims about one gateway of the scope in the log below the claim's
    size (docs/bundle.md §4a): its lowest and highest sequence numbers there (``first_seq``,
    ``latest_seq``), the run ``from_seq``..``to_seq`` the bundle carries, and how many of the
    gateway's messages the log holds in that run (``count``, all carried). All ``None`` (and
    ``count`` 0) when the log holds no message of the gateway below that size."""

    gateway: str
    first_seq: int | None
    latest_seq: int | None
    from_seq: int | None
    to_seq: int | None
    count: int

    def to_obj(self) -> list[Any]:
        return [self.gateway, self.first_seq, self.latest_seq, self.from_seq, self.to_seq,
                self.count]


@dataclass(frozen=True)
class Completeness:
    """The exporter's completeness claim (version 2): ``claim`` is the exact deterministic-CBOR
    bytes that ``note`` (a signed note by the log key, :func:`parse_claim_note`) commits to by
    hash; the other fields are what those bytes say, read by :func:`decode_bundle`."""

    claim: bytes
    note: bytes
    scope: Scope
    size: int
    registry: int
    gateways: tuple[GatewayClaim, ...]

    def to_obj(self) -> dict[str, Any]:
        return {"claim": self.claim, "note": self.note}


@dataclass(frozen=True, slots=True)
class SealFarm:
    """A farm record of the seal's inner tree (docs/bundle.md §4b): its position among the
    seal's records (sorted by farm), its exact bytes and its inner inclusion proof."""

    position: int
    record: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class SealProof:
    """The completeness seal of the checkpoint of size ``size`` (version 3): the log entry at
    index ``size − 1`` (proven through ``hashes`` like any entry) and the farm records the
    scope needs. What the bytes say is read and checked by the verifier."""

    size: int
    entry: bytes
    farms: tuple[SealFarm, ...]

    def to_obj(self) -> dict[str, Any]:
        return {"size": self.size, "entry": self.entry,
                "farms": [[f.position, f.record, list(f.proof)] for f in self.farms]}


@dataclass(frozen=True)
class Bundle:
    origin: str
    vkey: str
    scope: Scope
    created: float
    checkpoints: tuple[BundleCheckpoint, ...]
    consistency: tuple[tuple[bytes, ...], ...]
    hashes: Mapping[tuple[int, int], bytes]
    registry: tuple[Entry, ...]
    messages: tuple[Entry, ...]
    version: int = BUNDLE_VERSION
    notes: tuple[str, ...] = field(default=())
    completeness: Completeness | None = None
    seal: SealProof | None = None

    def to_obj(self) -> dict[str, Any]:
        obj = {
            "format": BUNDLE_FORMAT,
            "version": self.version,
            "created": float(self.created),
            "scope": self.scope.to_obj(),
            "log": {"origin": self.origin, "vkey": self.vkey},
            "checkpoints": [
                {"note": c.note, "anchors": [a.to_obj() for a in c.anchors]}
                for c in self.checkpoints
            ],
            "consistency": [list(p) for p in self.consistency],
            "hashes": [[b, e, h] for (b, e), h in sorted(self.hashes.items())],
            "registry": [[e.index, e.data] for e in self.registry],
            "messages": [[e.index, e.data] for e in self.messages],
            "notes": list(self.notes),
        }
        if self.completeness is not None:
            obj["completeness"] = self.completeness.to_obj()
        if self.seal is not None:
            obj["seal"] = self.seal.to_obj()
        return obj


def encode_bundle(bundle: Bundle) -> bytes:
    """The bundle as CBOR (RFC 8949, definite lengths, sorted map keys)."""
    return bytes(cbor2.dumps(bundle.to_obj(), canonical=True))


# ----------------------------------------------------------------------------- the claim


def encode_claim(scope: Scope, size: int, registry: int,
                 gateways: Sequence[GatewayClaim]) -> bytes:
    """The completeness claim's bytes (deterministic CBOR, docs/bundle.md §4a)."""
    return bytes(cbor2.dumps({
        "t": CLAIM_TYPE,
        "scope": scope.to_obj(),
        "size": size,
        "registry": registry,
        "gateways": [g.to_obj() for g in sorted(gateways, key=lambda g: g.gateway)],
    }, canonical=True))


def _claim_text(origin: str, size: int, root: bytes, claim: bytes) -> str:
    return "\n".join([CLAIM_TYPE, origin, str(size), base64.b64encode(root).decode(),
                      base64.b64encode(hashlib.sha256(claim).digest()).decode()]) + "\n"


def sign_completeness(signer: Signer, origin: str, root: bytes, scope: Scope, size: int,
                      registry: int, gateways: Sequence[GatewayClaim]) -> Completeness:
    """The claim for a bundle, signed with the log key (the exporter's side)."""
    claim = encode_claim(scope, size, registry, gateways)
    note = sign_note(_claim_text(origin, size, root, claim), [signer])
    return Completeness(claim, note, scope, size, registry,
                        tuple(sorted(gateways, key=lambda g: g.gateway)))


@dataclass(frozen=True)
class ClaimNote:
    """The body of a completeness claim's signed note, once its signature is checked."""

    origin: str
    size: int
    root: bytes
    claim_hash: bytes


def parse_claim_note(text: str) -> ClaimNote:
    """Parse the (verified) text of a completeness note strictly; :class:`BundleError` if it
    is not one. Its first line can never be a checkpoint's (size and root follow the origin
    there), so neither note can pass for the other."""
    lines = text.split("\n")
    if len(lines) != 6 or lines[5] != "" or lines[0] != CLAIM_TYPE:
        raise BundleError(f"the note is not a completeness claim (five lines, the first "
                          f"{CLAIM_TYPE!r})")
    origin, size_text, root_text, hash_text = lines[1:5]
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size_text) or int(size_text) > MAX_UINT64:
        raise BundleError("the completeness note's tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
        digest = base64.b64decode(hash_text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError("the completeness note's hashes are not base64") from None
    if (len(root) != HASH_SIZE or len(digest) != HASH_SIZE
            or base64.b64encode(root).decode() != root_text
            or base64.b64encode(digest).decode() != hash_text):
        raise BundleError("the completeness note's hashes are not canonical base64 of 32 "
                          "bytes")
    return ClaimNote(origin, int(size_text), root, digest)


# ----------------------------------------------------------------------------- decoding
#
# A reader of CBOR item heads (RFC 8949 §3). Every length and count is compared with the bytes
# left before anything is allocated: an array of n items needs at least n bytes, a map of n
# pairs 2n, a string of n bytes n. The big arrays (messages, registry, hashes) have loops of
# their own that build entries straight from the bytes; the small maps (scope, log, anchors,
# checkpoints) go through a generic decoder with an item budget.


_TRUNCATED = "the bundle is truncated (a length or count runs past its end)"


class _Reader:
    __slots__ = ("budget", "d", "n", "p")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.d = data
        self.p = pos
        self.n = len(data) if end is None else end
        self.budget = 0

    def head(self) -> tuple[int, int, int]:
        """(major type, additional info, argument) of the next item; no tags, no indefinite
        lengths."""
        d, p = self.d, self.p
        if p >= self.n:
            raise BundleError(_TRUNCATED)
        ib = d[p]
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            value, p = info, p + 1
        elif info < 28:
            size = 1 << (info - 24)
            if p + 1 + size > self.n:
                raise BundleError(_TRUNCATED)
            value = int.from_bytes(d[p + 1:p + 1 + size], "big")
            p += 1 + size
        elif info == 31:
            raise BundleError("indefinite-length items are not allowed in a bundle")
        else:
            raise BundleError(f"reserved CBOR encoding (0x{ib:02x})")
        if major == 6:
            raise BundleError("a bundle contains no CBOR tags")
        self.p = p
        return major, info, value

    def count(self, major: int, value: int, what: str, limit: int) -> int:
        """An array's (4) or map's (5) count, bounded by ``limit`` and by the bytes left."""
        if value > limit:
            raise BundleError(f"{what} has {value:,} items, over the limit of {limit:,}")
        if value * (2 if major == 5 else 1) > self.n - self.p:
            raise BundleError(f"{what} announces {value:,} items, more than the bytes left")
        return value

    def raw(self, length: int) -> bytes:
        if length > self.n - self.p:
            raise BundleError(_TRUNCATED)
        out = self.d[self.p:self.p + length]
        self.p += length
        return out

    def value(self, what: str, depth: int = 0) -> Any:
        """One item as Python objects, within ``budget`` items and the nesting limit."""
        major, info, v = self.head()
        self.budget -= 1
        if self.budget < 0:
            raise BundleError(f"{what} has more items than the format allows there")
        if major == 0:
            return v
        if major == 1:
            return -1 - v
        if major == 2:
            return self.raw(v)
        if major == 3:
            try:
                return self.raw(v).decode("utf-8")
            except UnicodeDecodeError:
                raise BundleError(f"{what} holds text that is not UTF-8") from None
        if major in (4, 5):
            if depth >= _MAX_DEPTH:
                raise BundleError(f"{what} is nested deeper than {_MAX_DEPTH}")
            n = self.count(major, v, what, self.budget)
            if major == 4:
                return [self.value(what, depth + 1) for _ in range(n)]
            out: dict[Any, Any] = {}
            for _ in range(n):
                key = self.value(what, depth + 1)
                if type(key) not in (str, int):
                    raise BundleError(f"{what} keys must be text")
                if key in out:
                    raise BundleError(f"{what} has a duplicate map key {key!r}")
                out[key] = self.value(what, depth + 1)
            return out
        # major 7: simple values and floats
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        if info == 25:
            return struct.unpack(">e", v.to_bytes(2, "big"))[0]
        if info == 26:
            return struct.unpack(">f", v.to_bytes(4, "big"))[0]
        if info == 27:
            return struct.unpack(">d", v.to_bytes(8, "big"))[0]
        raise BundleError(f"{what} holds a CBOR simple value the format does not use")

    def small(self, what: str, budget: int) -> Any:
        """A small structure (map, text, number…) of at most ``budget`` items."""
        self.budget = budget
        return self.value(what)

    def array(self, what: str, limit: int) -> int:
        major, _, v = self.head()
        if major != 4:
            raise BundleError(f"{what} must be an array")
        return self.count(4, v, what, limit)


def _map(
    obj: Any, what: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise BundleError(f"{what} must be a map")
    keys = set(obj)
    if not all(isinstance(k, str) for k in keys):
        raise BundleError(f"{what} keys must be text")
    missing = required - keys
    if missing:
        raise BundleError(f"{what} lacks {', '.join(sorted(missing))}")
    extra = keys - required - optional
    if extra:
        raise BundleError(f"{what} has fields this version does not define: "
                          f"{', '.join(sorted(extra)[:5])}")
    return dict(obj)


def _uint(obj: Any, what: str, limit: int = MAX_UINT64) -> int:
    if type(obj) is not int or not 0 <= obj <= limit:
        raise BundleError(f"{what} must be an unsigned integer up to {limit}")
    return obj


def _number(obj: Any, what: str) -> float:
    if type(obj) not in (int, float) or not math.isfinite(obj) or abs(obj) > 1e13:
        raise BundleError(f"{what} must be a finite number of seconds since the epoch")
    return float(obj)


def _text(obj: Any, what: str, limits: Limits, *, optional: bool = False) -> str:
    if obj is None and optional:
        return ""
    if not isinstance(obj, str) or not obj or len(obj) > limits.max_text:
        raise BundleError(f"{what} must be a text string of 1..{limits.max_text} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in obj):
        raise BundleError(f"{what} contains control characters")
    return obj


def _bytes(obj: Any, what: str, limit: int) -> bytes:
    if not isinstance(obj, bytes) or not obj or len(obj) > limit:
        raise BundleError(f"{what} must be a byte string of 1..{limit:,} bytes")
    return obj


def _hash(obj: Any, what: str) -> bytes:
    if not isinstance(obj, bytes) or len(obj) != HASH_SIZE:
        raise BundleError(f"{what} must be a {HASH_SIZE}-byte hash")
    return obj


def _hex32(obj: Any, what: str) -> str:
    if not isinstance(obj, str) or not _HEX32.match(obj):
        raise BundleError(f"{what} must be 0x and 64 lowercase hex digits")
    return obj


def _anchor(obj: Any, what: str) -> AnchorRef:
    if not isinstance(obj, Mapping):
        raise BundleError(f"{what} must be a map")
    chain = obj.get("chain")
    if chain not in CHAINS:
        raise BundleError(f"{what} chain must be one of {', '.join(CHAINS)}")
    common = {"chain", "tx", "block_number", "block_id", "block_time"}
    genesis: str | None = None
    if chain == "thor":
        m = _map(obj, what, common | {"genesis"})
        network = _hex32(m["genesis"], f"{what} genesis")
    else:
        m = _map(obj, what, common | {"chain_id"}, frozenset({"genesis"}))
        network = str(_uint(m["chain_id"], f"{what} chain_id", 2**53))
        if network == "0":
            raise BundleError(f"{what} chain_id must be positive")
        if "genesis" in m:
            genesis = _hex32(m["genesis"], f"{what} genesis")
    return AnchorRef(
        chain=chain,
        network=network,
        tx=_hex32(m["tx"], f"{what} tx"),
        block_number=_uint(m["block_number"], f"{what} block_number", 2**63),
        block_id=_hex32(m["block_id"], f"{what} block_id"),
        block_time=_uint(m["block_time"], f"{what} block_time", 2**40),
        genesis=genesis,
    )


def _scope(obj: Any, what: str, limits: Limits) -> Scope:
    s = _map(obj, what, {"farm", "field", "gateway", "from", "to"})
    scope = Scope(
        farm=_text(s["farm"], f"{what} farm", limits, optional=True) or None,
        field=_text(s["field"], f"{what} field", limits, optional=True) or None,
        gateway=_text(s["gateway"], f"{what} gateway", limits, optional=True) or None,
        start=_number(s["from"], f"{what} from"),
        end=_number(s["to"], f"{what} to"),
    )
    if scope.start > scope.end:
        raise BundleError(f"{what} from is after {what} to")
    return scope


def _uint_at(d: bytes, p: int, what: str) -> tuple[int, int]:
    """An unsigned integer head at ``p`` (fast path of the big arrays): (value, next p)."""
    b = d[p]
    if b < 0x18:
        return b, p + 1
    if b < 0x1C:
        size = 1 << (b - 0x18)
        return int.from_bytes(d[p + 1:p + 1 + size], "big"), p + 1 + size
    raise BundleError(f"{what} must be an unsigned integer")


def _bytes_at(d: bytes, p: int, n: int, what: str, low: int, high: int) -> tuple[bytes, int]:
    """A byte string at ``p`` of ``low``..``high`` bytes: (value, next p)."""
    b = d[p]
    if 0x40 <= b < 0x58:
        length, p = b - 0x40, p + 1
    elif 0x58 <= b < 0x5C:
        size = 1 << (b - 0x58)
        length, p = int.from_bytes(d[p + 1:p + 1 + size], "big"), p + 1 + size
    else:
        raise BundleError(f"{what} must be a byte string")
    if not low <= length <= high:
        raise BundleError(f"{what} must be a byte string of {low:,}..{high:,} bytes")
    if p + length > n:
        raise BundleError(_TRUNCATED)
    return d[p:p + length], p + length


def _entries(r: _Reader, what: str, limit: int, limits: Limits) -> tuple[Entry, ...]:
    """``[[log index, entry bytes], …]`` in strictly ascending index order."""
    count = r.array(what, limit)
    if count * (3 + MIN_ENTRY_BYTES) > r.n - r.p:
        raise BundleError(f"{what} announces {count:,} entries, more than the bytes left")
    d, p, n = r.d, r.p, r.n
    high = limits.max_entry_bytes
    out: list[Entry] = []
    append = out.append
    last = -1
    for i in range(count):
        if d[p] != 0x82:
            raise BundleError(f"{what}[{i}] must be [log index, entry bytes]")
        # the common heads inline (a big bundle has hundreds of thousands of entries): an
        # index of 1, 2 or 4 bytes, an entry of up to 65,535 bytes
        b = d[p + 1]
        if b == 0x1A:
            index, p = int.from_bytes(d[p + 2:p + 6], "big"), p + 6
        elif b == 0x19:
            index, p = (d[p + 2] << 8) | d[p + 3], p + 4
        else:
            index, p = _uint_at(d, p + 1, f"{what}[{i}] log index")
        if index <= last:
            raise BundleError(
                f"{what}[{i}] has log index {index} after {last}: entries must be in strictly "
                "ascending log order, each once")
        b = d[p]
        if b == 0x59:
            length = (d[p + 1] << 8) | d[p + 2]
            if MIN_ENTRY_BYTES <= length <= high and p + 3 + length <= n:
                append(Entry(index, d[p + 3:p + 3 + length]))
                p += 3 + length
                last = index
                continue
        elif b == 0x58:
            length = d[p + 1]
            if MIN_ENTRY_BYTES <= length <= high and p + 2 + length <= n:
                append(Entry(index, d[p + 2:p + 2 + length]))
                p += 2 + length
                last = index
                continue
        data, p = _bytes_at(d, p, n, f"{what}[{i}] entry", MIN_ENTRY_BYTES, high)
        append(Entry(index, data))
        last = index
    r.p = p
    return tuple(out)


def _hashes(r: _Reader, limits: Limits) -> dict[tuple[int, int], bytes]:
    """``[[begin, end, hash], …]``, each range once, begin < end."""
    count = r.array("hashes", limits.max_hashes)
    if count * (4 + HASH_SIZE) > r.n - r.p:
        raise BundleError(f"hashes announces {count:,} items, more than the bytes left")
    d, p, n = r.d, r.p, r.n
    hashes: dict[tuple[int, int], bytes] = {}
    for i in range(count):
        if d[p] != 0x83:
            raise BundleError(f"hashes[{i}] must be [begin, end, hash]")
        if d[p + 1] == 0x1A and d[p + 6] == 0x1A:  # the common case: two 4-byte integers
            begin = int.from_bytes(d[p + 2:p + 6], "big")
            end = int.from_bytes(d[p + 7:p + 11], "big")
            p += 11
        else:
            begin, p = _uint_at(d, p + 1, f"hashes[{i}] begin")
            end, p = _uint_at(d, p, f"hashes[{i}] end")
        if begin >= end:
            raise BundleError(f"hashes[{i}] covers the empty range [{begin}, {end})")
        if d[p] != 0x58 or d[p + 1] != HASH_SIZE:
            raise BundleError(f"hashes[{i}] hash must be a {HASH_SIZE}-byte hash")
        p += 2
        if p + HASH_SIZE > n:
            raise BundleError(_TRUNCATED)
        key = (begin, end)
        if key in hashes:
            raise BundleError(f"hashes lists the subtree [{begin}, {end}) twice")
        hashes[key] = d[p:p + HASH_SIZE]
        p += HASH_SIZE
    r.p = p
    return hashes


def _consistency(r: _Reader, limits: Limits) -> tuple[tuple[bytes, ...], ...]:
    count = r.array("consistency", limits.max_checkpoints)
    out = []
    for i in range(count):
        n = r.array(f"consistency[{i}]", limits.max_proof_hashes)
        proof = []
        for j in range(n):
            major, _, v = r.head()
            if major != 2 or v != HASH_SIZE:
                raise BundleError(f"consistency[{i}][{j}] must be a {HASH_SIZE}-byte hash")
            proof.append(r.raw(HASH_SIZE))
        out.append(tuple(proof))
    return tuple(out)


#: items in one checkpoint map: the map, two keys, the note, the anchors array, and per anchor
#: a map of at most 7 pairs
_CHECKPOINT_ITEMS = 5
_ANCHOR_ITEMS = 15


def _checkpoints(r: _Reader, limits: Limits) -> tuple[BundleCheckpoint, ...]:
    count = r.array("checkpoints", limits.max_checkpoints)
    out = []
    budget = _CHECKPOINT_ITEMS + limits.max_anchors_per_checkpoint * _ANCHOR_ITEMS
    for i in range(count):
        what = f"checkpoints[{i}]"
        cm = _map(r.small(what, budget), what, {"note", "anchors"})
        anchors = cm["anchors"]
        if not isinstance(anchors, list):
            raise BundleError(f"{what} anchors must be an array")
        if len(anchors) > limits.max_anchors_per_checkpoint:
            raise BundleError(f"{what} anchors has {len(anchors):,} items, over the limit of "
                              f"{limits.max_anchors_per_checkpoint:,}")
        refs = tuple(_anchor(a, f"{what} anchors[{j}]") for j, a in enumerate(anchors))
        if len({(a.chain, a.network, a.tx) for a in refs}) != len(refs):
            raise BundleError(f"{what} lists the same anchor twice")
        out.append(BundleCheckpoint(_bytes(cm["note"], f"{what} note", limits.max_note_bytes),
                                    refs))
    return tuple(out)


def _notes(r: _Reader, limits: Limits) -> tuple[str, ...]:
    count = r.array("notes", 100)
    return tuple(_text(r.small(f"notes[{i}]", 1), f"notes[{i}]", limits) for i in range(count))


def _opt_seq(obj: Any, what: str) -> int | None:
    return None if obj is None else _uint(obj, what)


def _claim(data: bytes, limits: Limits) -> tuple[Scope, int, int, tuple[GatewayClaim, ...]]:
    """Read a completeness claim's bytes: ``{"t", "scope", "size", "registry", "gateways"}``."""
    r = _Reader(data)
    major, _, v = r.head()
    if major != 5:
        raise BundleError("the completeness claim must be a map")
    fields: dict[str, Any] = {}
    for _ in range(r.count(5, v, "the completeness claim", 5)):
        key = r.small("the completeness claim", 1)
        if key in fields:
            raise BundleError(f"the completeness claim has a duplicate key {key!r}")
        if key == "gateways":
            n = r.array("the completeness claim's gateways", limits.max_registry_events)
            records = []
            for i in range(n):
                rec = r.small(f"completeness gateways[{i}]", 7)
                if type(rec) is not list or len(rec) != 6:
                    raise BundleError(f"completeness gateways[{i}] must be [gateway, first, "
                                      "latest, from, to, count]")
                records.append(rec)
            fields[key] = records
        elif key in ("t", "scope", "size", "registry"):
            fields[key] = r.small(f"the completeness claim's {key}", 12)
        else:
            raise BundleError(f"the completeness claim has a field version 1 of it does not "
                              f"define: {key!r}")
    if r.p != r.n:
        raise BundleError("the completeness claim has bytes after its CBOR item")
    c = _map(fields, "the completeness claim", {"t", "scope", "size", "registry", "gateways"})
    if c["t"] != CLAIM_TYPE:
        raise BundleError(f"the completeness claim's t must be {CLAIM_TYPE!r}")
    scope = _scope(c["scope"], "the completeness claim's scope", limits)
    size = _uint(c["size"], "the completeness claim's size")
    if size == 0:
        raise BundleError("the completeness claim's size must be positive")
    registry = _uint(c["registry"], "the completeness claim's registry", size)
    gateways = []
    last = ""
    for i, rec in enumerate(c["gateways"]):
        what = f"completeness gateways[{i}]"
        gw = rec[0]
        if not isinstance(gw, str) or not _GATEWAY_ID.match(gw):
            raise BundleError(f"{what} gateway must be a gateway id (gw- and 16 hex digits)")
        if gw <= last:
            raise BundleError(f"{what}: gateways must be sorted by id, each once")
        last = gw
        first, latest, lo, hi = (_opt_seq(x, f"{what} seq") for x in rec[1:5])
        count = _uint(rec[5], f"{what} count")
        seqs = (first, latest, lo, hi)
        if all(x is None for x in seqs):
            if count:
                raise BundleError(f"{what} counts messages but names no sequence numbers")
        elif any(x is None for x in seqs):
            raise BundleError(f"{what} must name all of first, latest, from and to, or none")
        else:
            assert first is not None and latest is not None and lo is not None and hi is not None
            if not first <= lo <= hi <= latest:
                raise BundleError(f"{what} must have first ≤ from ≤ to ≤ latest")
            if not 1 <= count <= hi - lo + 1:
                raise BundleError(f"{what} count must be 1..(to − from + 1)")
        gateways.append(GatewayClaim(gw, first, latest, lo, hi, count))
    return scope, size, registry, tuple(gateways)


def _completeness(obj: Any, limits: Limits) -> Completeness:
    m = _map(obj, "completeness", {"claim", "note"})
    claim = _bytes(m["claim"], "completeness claim", limits.max_claim_bytes)
    note = _bytes(m["note"], "completeness note", limits.max_note_bytes)
    scope, size, registry, gateways = _claim(claim, limits)
    return Completeness(claim, note, scope, size, registry, gateways)


#: the seal map's items beyond its farms, and per farm: the pair, position, record, proof array
_SEAL_ITEMS = 8
_SEAL_FARM_ITEMS = 4


def _seal(r: _Reader, limits: Limits) -> SealProof:
    """``{"size", "entry", "farms": [[position, record, [hash…]], …]}``, positions ascending."""
    budget = _SEAL_ITEMS + limits.max_seal_farms * (_SEAL_FARM_ITEMS + limits.max_proof_hashes)
    m = _map(r.small("seal", budget), "seal", {"size", "entry", "farms"})
    size = _uint(m["size"], "seal size")
    if size == 0:
        raise BundleError("seal size must be positive (the seal is the checkpoint's last leaf)")
    entry = _bytes(m["entry"], "seal entry", limits.max_entry_bytes)
    if len(entry) < MIN_ENTRY_BYTES:
        raise BundleError(f"seal entry must be at least {MIN_ENTRY_BYTES} bytes")
    rows = m["farms"]
    if not isinstance(rows, list) or len(rows) > limits.max_seal_farms:
        raise BundleError(f"seal farms must be an array of at most {limits.max_seal_farms:,}")
    farms: list[SealFarm] = []
    for i, row in enumerate(rows):
        what = f"seal farms[{i}]"
        if not isinstance(row, list) or len(row) != 3 or not isinstance(row[2], list):
            raise BundleError(f"{what} must be [position, record bytes, [hash, …]]")
        position = _uint(row[0], f"{what} position", MAX_UINT64)
        if farms and position <= farms[-1].position:
            raise BundleError(f"{what}: positions must ascend, each once")
        if len(row[2]) > limits.max_proof_hashes:
            raise BundleError(f"{what} proof has more than {limits.max_proof_hashes} hashes")
        farms.append(SealFarm(
            position, _bytes(row[1], f"{what} record", limits.max_claim_bytes),
            tuple(_hash(h, f"{what} proof hash") for h in row[2])))
    return SealProof(size, entry, tuple(farms))


_TOP_REQUIRED = {"format", "version", "created", "scope", "log", "checkpoints", "consistency",
                 "hashes", "registry", "messages"}
_TOP_KNOWN = _TOP_REQUIRED | {"notes", "completeness", "seal"}


def decode_bundle(data: bytes, limits: Limits | None = None) -> Bundle:
    """Parse a bundle, checking structure, types, sizes and internal consistency.

    Raises :class:`BundleError` (a FormatError and ValueError) and nothing else, whatever the
    bytes."""
    limits = limits or Limits()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BundleError(f"a bundle is bytes, not {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise BundleError(f"bundle is {len(data):,} bytes, over the limit of {limits.max_bytes:,}")
    if not data:
        raise BundleError("bundle is empty")
    try:
        return _decode(data if type(data) is bytes else bytes(data), limits)
    except (IndexError, struct.error, OverflowError):
        raise BundleError(_TRUNCATED) from None


def _decode(data: bytes, limits: Limits) -> Bundle:
    r = _Reader(data)
    major, _, v = r.head()
    if major != 5:
        raise BundleError(f"not a fieldproof bundle (no format = {BUNDLE_FORMAT!r})")
    top: dict[str, Any] = {}
    for _ in range(r.count(5, v, "bundle", len(_TOP_KNOWN))):
        key = r.small("bundle key", 1)
        if not isinstance(key, str):
            raise BundleError("bundle keys must be text")
        if key in top:
            raise BundleError(f"bundle has a duplicate map key {key!r}")
        if key not in _TOP_KNOWN:
            raise BundleError(f"bundle has fields this version does not define: {key}")
        if key == "messages":
            top[key] = _entries(r, "messages", limits.max_messages, limits)
        elif key == "registry":
            top[key] = _entries(r, "registry", limits.max_registry_events, limits)
        elif key == "hashes":
            top[key] = _hashes(r, limits)
        elif key == "consistency":
            top[key] = _consistency(r, limits)
        elif key == "checkpoints":
            top[key] = _checkpoints(r, limits)
        elif key == "notes":
            top[key] = _notes(r, limits)
        elif key == "seal":
            top[key] = _seal(r, limits)
        else:  # format, version, created, scope, log, completeness: small maps or scalars
            top[key] = r.small(key, 12)
    if r.p != r.n:
        raise BundleError(f"bundle has {r.n - r.p} bytes after its CBOR item")
    if top.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"not a fieldproof bundle (no format = {BUNDLE_FORMAT!r})")
    version = top.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise BundleError(
            f"bundle version {version!r} is not supported (this verifier reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); use a newer fieldproof")
    if version == 1 and "completeness" in top:
        raise BundleError("bundle has fields version 1 does not define: completeness")
    if version < 3 and "seal" in top:
        raise BundleError(f"bundle has fields version {version} does not define: seal")
    missing = _TOP_REQUIRED - set(top)
    if missing:
        raise BundleError(f"bundle lacks {', '.join(sorted(missing))}")

    scope = _scope(top["scope"], "scope", limits)
    log = _map(top["log"], "log", {"origin", "vkey"})
    origin = _text(log["origin"], "log origin", limits)
    vkey = _text(log["vkey"], "log vkey", limits)
    checkpoints: tuple[BundleCheckpoint, ...] = top["checkpoints"]
    consistency: tuple[tuple[bytes, ...], ...] = top["consistency"]
    if len(consistency) != max(0, len(checkpoints) - 1):
        raise BundleError(
            f"consistency has {len(consistency)} proofs for {len(checkpoints)} checkpoints; "
            "it needs one between each pair of successive checkpoints"
        )
    registry: tuple[Entry, ...] = top["registry"]
    messages: tuple[Entry, ...] = top["messages"]
    shared = {e.index for e in registry}.intersection(e.index for e in messages)
    if shared:
        raise BundleError(
            f"log index {min(shared)} is given both as a registry event and as a message"
        )
    completeness = None
    if "completeness" in top:
        completeness = _completeness(top["completeness"], limits)
    elif version >= 2 and checkpoints:
        raise BundleError(f"a version {version} bundle with checkpoints must carry its "
                          "completeness claim")
    seal: SealProof | None = top.get("seal")
    if seal is not None and (completeness is None or seal.size != completeness.size):
        raise BundleError("the seal must be for the checkpoint the completeness claim speaks of "
                          "(the claim's tree size)")
    return Bundle(
        origin=origin,
        vkey=vkey,
        scope=scope,
        created=_number(top["created"], "created"),
        checkpoints=checkpoints,
        consistency=consistency,
        hashes=top["hashes"],
        registry=registry,
        messages=messages,
        version=version,
        notes=top.get("notes", ()),
        completeness=completeness,
        seal=seal,
    )
