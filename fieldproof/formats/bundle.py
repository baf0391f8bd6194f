"""The evidence bundle: one self-contained, versioned CBOR file an inspector verifies offline.

A bundle carries what a verifier needs and nothing it must trust: the signed messages (exact
bytes) with their log indices, the registry events they depend on, the signed checkpoints with
their anchor references, consistency proofs between successive checkpoints, and the subtree
hashes that make up every inclusion proof. docs/bundle.md is the byte-level description; this
module is its only encoder and a strict, hostile-input-safe decoder.

Parsing never trusts the bytes: the CBOR decoder runs with nesting, duplicate-key, indefinite
length and tag restrictions, every field's type and size is checked against :class:`Limits`,
and any contradiction (duplicate index, unsorted list, one subtree with two hashes) rejects the
bundle with a :class:`BundleError` that says what is wrong. Nothing cryptographic happens here:
that is :mod:`inspector.verify`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "MEDIA_TYPE",
    "AnchorRef",
    "Bundle",
    "BundleCheckpoint",
    "BundleError",
    "Entry",
    "Limits",
    "Scope",
    "decode_bundle",
    "encode_bundle",
]

BUNDLE_FORMAT = "fieldproof/bundle"
BUNDLE_VERSION = 1
MEDIA_TYPE = "application/vnd.fieldproof.bundle+cbor"
HASH_SIZE = 32
MAX_UINT64 = 2**64 - 1
CHAINS = ("thor", "evm")
_HEX32 = re.compile(r"^0x[0-9a-f]{64}$")


class BundleError(ValueError):
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
    max_entry_bytes: int = 64 * 1024
    max_note_bytes: int = 64 * 1024
    max_text: int = 1024
    max_proof_hashes: int = 128


@dataclass(frozen=True)
class Scope:
    """What the exporter was asked for: farm/field/gateway (None = all) and a time range."""

    farm: str | None
    field: str | None
    gateway: str | None
    start: float
    end: float


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


@dataclass(frozen=True)
class BundleCheckpoint:
    note: bytes
    anchors: tuple[AnchorRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry as carried: its index in the log and its exact bytes."""

    index: int
    data: bytes


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

    def to_obj(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "version": self.version,
            "created": float(self.created),
            "scope": {
                "farm": self.scope.farm,
                "field": self.scope.field,
                "gateway": self.scope.gateway,
                "from": float(self.scope.start),
                "to": float(self.scope.end),
            },
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


def encode_bundle(bundle: Bundle) -> bytes:
    """The bundle as CBOR (RFC 8949, definite lengths, sorted map keys)."""
    return bytes(cbor2.dumps(bundle.to_obj(), canonical=True))


# ----------------------------------------------------------------------------- decoding

# cbor2's built-in tag decoders (datetimes, bignums, regexes, shared references, sets, ...)
# would turn hostile bytes into objects we never asked for: a bundle carries no tags at all.
_BUILTIN_TAGS = (0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 52,
                 54, 100, 256, 258, 260, 261, 1004, 55799)


def _reject_tag(*_: Any) -> Any:
    raise BundleError("a bundle contains no CBOR tags")


_NO_TAGS = {t: _reject_tag for t in _BUILTIN_TAGS}


def _cbor(data: bytes, limits: Limits) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BundleError(f"a bundle is bytes, not {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise BundleError(f"bundle is {len(data):,} bytes, over the limit of {limits.max_bytes:,}")
    if not data:
        raise BundleError("bundle is empty")
    try:
        return cbor2.loads(
            bytes(data),
            tag_hook=_reject_tag,
            semantic_decoders=_NO_TAGS,
            max_depth=8,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except BundleError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError,
            MemoryError, UnicodeDecodeError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, BundleError) else None
        raise BundleError(str(cause) if cause else f"bundle is not valid CBOR: {exc}") from None


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


def _list(obj: Any, what: str, limit: int) -> Sequence[Any]:
    if not isinstance(obj, list | tuple):
        raise BundleError(f"{what} must be an array")
    if len(obj) > limit:
        raise BundleError(f"{what} has {len(obj):,} items, over the limit of {limit:,}")
    return obj


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


def _entries(obj: Any, what: str, limit: int, limits: Limits) -> tuple[Entry, ...]:
    items = _list(obj, what, limit)
    out: list[Entry] = []
    last = -1
    max_bytes = limits.max_entry_bytes
    for i, item in enumerate(items):
        if (type(item) in (list, tuple) and len(item) == 2 and type(item[0]) is int
                and last < item[0] <= MAX_UINT64 and type(item[1]) is bytes
                and 0 < len(item[1]) <= max_bytes):
            last = item[0]
            out.append(Entry(last, item[1]))
            continue
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise BundleError(f"{what}[{i}] must be [log index, entry bytes]")
        index = _uint(item[0], f"{what}[{i}] log index")
        if index <= last:
            raise BundleError(
                f"{what}[{i}] has log index {index} after {last}: entries must be in strictly "
                "ascending log order, each once"
            )
        last = index
        out.append(Entry(index, _bytes(item[1], f"{what}[{i}] entry", limits.max_entry_bytes)))
    return tuple(out)


_TOP_REQUIRED = {"format", "version", "created", "scope", "log", "checkpoints", "consistency",
                 "hashes", "registry", "messages"}


def decode_bundle(data: bytes, limits: Limits | None = None) -> Bundle:
    """Parse a bundle, checking structure, types, sizes and internal consistency.

    Raises :class:`BundleError` (a ValueError) and nothing else, whatever the bytes."""
    limits = limits or Limits()
    obj = _cbor(data, limits)
    if not isinstance(obj, Mapping) or obj.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"not a fieldproof bundle (no format = {BUNDLE_FORMAT!r})")
    version = obj.get("version")
    if version != BUNDLE_VERSION:
        raise BundleError(
            f"bundle version {version!r} is not supported (this verifier reads version "
            f"{BUNDLE_VERSION}); use a newer fieldproof"
        )
    top = _map(obj, "bundle", _TOP_REQUIRED, frozenset({"notes"}))

    s = _map(top["scope"], "scope", {"farm", "field", "gateway", "from", "to"})
    scope = Scope(
        farm=_text(s["farm"], "scope farm", limits, optional=True) or None,
        field=_text(s["field"], "scope field", limits, optional=True) or None,
        gateway=_text(s["gateway"], "scope gateway", limits, optional=True) or None,
        start=_number(s["from"], "scope from"),
        end=_number(s["to"], "scope to"),
    )
    if scope.start > scope.end:
        raise BundleError("scope from is after scope to")
    log = _map(top["log"], "log", {"origin", "vkey"})
    origin = _text(log["origin"], "log origin", limits)
    vkey = _text(log["vkey"], "log vkey", limits)

    checkpoints: list[BundleCheckpoint] = []
    for i, c in enumerate(_list(top["checkpoints"], "checkpoints", limits.max_checkpoints)):
        cm = _map(c, f"checkpoints[{i}]", {"note", "anchors"})
        anchors = _list(cm["anchors"], f"checkpoints[{i}] anchors",
                        limits.max_anchors_per_checkpoint)
        refs = tuple(_anchor(a, f"checkpoints[{i}] anchors[{j}]") for j, a in enumerate(anchors))
        if len({(a.chain, a.network, a.tx) for a in refs}) != len(refs):
            raise BundleError(f"checkpoints[{i}] lists the same anchor twice")
        checkpoints.append(BundleCheckpoint(
            _bytes(cm["note"], f"checkpoints[{i}] note", limits.max_note_bytes), refs))

    proofs = _list(top["consistency"], "consistency", limits.max_checkpoints)
    if len(proofs) != max(0, len(checkpoints) - 1):
        raise BundleError(
            f"consistency has {len(proofs)} proofs for {len(checkpoints)} checkpoints; "
            "it needs one between each pair of successive checkpoints"
        )
    consistency = tuple(
        tuple(_hash(h, f"consistency[{i}][{j}]")
              for j, h in enumerate(_list(p, f"consistency[{i}]", limits.max_proof_hashes)))
        for i, p in enumerate(proofs)
    )

    hashes: dict[tuple[int, int], bytes] = {}
    for i, item in enumerate(_list(top["hashes"], "hashes", limits.max_hashes)):
        # the common case in one test (a 100,000-message bundle has ~200,000 of these); any
        # doubt goes through the checks one by one, which say what is wrong
        if (type(item) in (list, tuple) and len(item) == 3 and type(item[0]) is int
                and type(item[1]) is int and 0 <= item[0] < item[1] <= MAX_UINT64
                and type(item[2]) is bytes and len(item[2]) == HASH_SIZE
                and (item[0], item[1]) not in hashes):
            hashes[(item[0], item[1])] = item[2]
            continue
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise BundleError(f"hashes[{i}] must be [begin, end, hash]")
        begin = _uint(item[0], f"hashes[{i}] begin")
        end = _uint(item[1], f"hashes[{i}] end")
        if begin >= end:
            raise BundleError(f"hashes[{i}] covers the empty range [{begin}, {end})")
        if (begin, end) in hashes:
            raise BundleError(f"hashes lists the subtree [{begin}, {end}) twice")
        hashes[(begin, end)] = _hash(item[2], f"hashes[{i}] hash")

    registry = _entries(top["registry"], "registry", limits.max_registry_events, limits)
    messages = _entries(top["messages"], "messages", limits.max_messages, limits)
    shared = {e.index for e in registry} & {e.index for e in messages}
    if shared:
        raise BundleError(
            f"log index {min(shared)} is given both as a registry event and as a message"
        )
    notes = tuple(
        _text(n, f"notes[{i}]", limits)
        for i, n in enumerate(_list(top.get("notes", []), "notes", 100))
    )
    return Bundle(
        origin=origin,
        vkey=vkey,
        scope=scope,
        created=_number(top["created"], "created"),
        checkpoints=tuple(checkpoints),
        consistency=consistency,
        hashes=hashes,
        registry=registry,
        messages=messages,
        notes=notes,
    )
