"""Deterministic CBOR (RFC 8949 §4.2.1) as every signed structure here uses it, and a head walk
that bounds depth and item counts before anything is decoded (tags, string-reference and
shared-value bombs cannot expand). The errors every wire format raises start here."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping
from typing import Any

import cbor2

from fieldproof.errors import FormatError

COSE_SIGN1_TAG = 18


class WireError(FormatError):
    """A message is not a valid fieldproof message; the text says why."""


class MalformedMessage(WireError):
    """The bytes are not the structure the wire format requires."""


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    if value < 2**8:
        return bytes([major << 5 | 24, value])
    if value < 2**16:
        return bytes([major << 5 | 25]) + struct.pack(">H", value)
    if value < 2**32:
        return bytes([major << 5 | 26]) + struct.pack(">I", value)
    return bytes([major << 5 | 27]) + struct.pack(">Q", value)


def encode_deterministic(obj: Any) -> bytes:
    """Encode ``obj`` as core deterministic CBOR: shortest heads and floats, definite lengths,
    map keys sorted by the bytewise order of their encodings (RFC 8949 §4.2.1)."""
    if isinstance(obj, Mapping):
        items = sorted((encode_deterministic(k), encode_deterministic(v)) for k, v in obj.items())
        for (a, _), (b, _) in itertools.pairwise(items):
            if a == b:
                raise WireError("duplicate map key in CBOR map")
        return _head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(obj, list | tuple):
        return _head(4, len(obj)) + b"".join(encode_deterministic(x) for x in obj)
    if isinstance(obj, cbor2.CBORTag):
        return _head(6, obj.tag) + encode_deterministic(obj.value)
    return bytes(cbor2.dumps(obj, canonical=True))


def decode_deterministic(data: bytes, what: str = "CBOR item") -> Any:
    """Decode ``data`` and insist it is exactly one item in deterministic encoding.

    Re-encoding and comparing rejects trailing bytes, indefinite lengths, non-shortest forms,
    unsorted and duplicate keys in one step, so two different byte strings can never carry
    the same meaning."""
    # a COSE_Sign1 (tag 18) is the one tag allowed, on the outermost item only
    top = COSE_SIGN1_TAG if data[:1] == b"\xd2" else None
    scan_cbor(data, what, max_depth=16, max_items=1_000_000, top_tag=top)
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedMessage(f"{what} is not valid CBOR: {exc}") from None
    try:
        again = encode_deterministic(_thaw(obj))
    except (WireError, TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"{what} cannot be re-encoded: {exc}") from None
    if again != data:
        raise MalformedMessage(f"{what} is not deterministically encoded (RFC 8949 §4.2.1)")
    return _thaw(obj)


def _thaw(obj: Any) -> Any:
    """cbor2 6 returns immutable containers; give callers plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {_thaw(k): _thaw(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_thaw(x) for x in obj]
    if isinstance(obj, cbor2.CBORTag):
        return cbor2.CBORTag(obj.tag, _thaw(obj.value))
    return obj


def scan_cbor(
    data: bytes,
    what: str,
    *,
    max_depth: int = 8,
    max_items: int = 20_000,
    top_tag: int | None = None,
) -> None:
    """Walk the item heads without building anything: exactly one well-formed item, definite
    lengths, no tags (except ``top_tag`` on the outermost item), bounded depth and item count.

    Run before cbor2 builds objects, so a few hundred hostile bytes can never make it allocate
    megabytes: CBOR's string references (tag 25/256) and shared values (tag 28/29) expand
    exponentially, and deep nesting costs recursion."""
    pos, n, items = 0, len(data), 0
    if top_tag is not None:
        head = _head(6, top_tag)
        if not data.startswith(head):
            raise MalformedMessage(f"{what} must start with CBOR tag {top_tag}")
        pos = len(head)
    remaining = [1]  # items still to read at each open level
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        if pos >= n:
            raise MalformedMessage(f"{what} is truncated")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            value = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > n:
                raise MalformedMessage(f"{what} is truncated")
            value = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            raise MalformedMessage(f"{what} uses an indefinite length or a reserved encoding")
        items += 1
        if items > max_items:
            raise MalformedMessage(f"{what} has more than {max_items} CBOR items")
        if major in (2, 3):
            if value > n - pos:
                raise MalformedMessage(f"{what} is truncated")
            pos += value
        elif major in (4, 5):
            count = value * (2 if major == 5 else 1)
            if count > n - pos:
                raise MalformedMessage(f"{what} announces more items than it has bytes")
            remaining.append(count)
            if len(remaining) > max_depth + 1:
                raise MalformedMessage(f"{what} is nested deeper than {max_depth}")
        elif major == 6:
            raise MalformedMessage(f"{what} contains a CBOR tag ({value}); none is allowed")
        elif major == 7 and info == 24 and value < 32:
            raise MalformedMessage(f"{what} has a badly encoded simple value")
    if pos != n:
        raise MalformedMessage(f"{what} has {n - pos} bytes after its CBOR item")


def _decode_fixed_schema(data: bytes, what: str) -> Any:
    """Strict decode for structures whose map keys are all small integers (-24..23) or short
    text (< 24 bytes), as the payload and COSE headers are once their schema is checked.

    For such keys cbor2's canonical order (length first, RFC 7049) equals RFC 8949's bytewise
    order: every key's first byte encodes its major type and length. So re-encoding with cbor2's
    C encoder and comparing is the deterministic-encoding check at a fraction of the cost of
    :func:`decode_deterministic`. The caller MUST then reject any other key (the schema check),
    which closes the one gap (long keys, where the two orders differ)."""
    scan_cbor(data, what, top_tag=COSE_SIGN1_TAG if what == "message" else None)
    try:
        obj = cbor2.loads(data)
        again = cbor2.dumps(obj, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedMessage(f"{what} is not valid CBOR: {exc}") from None
    if again != data:
        raise MalformedMessage(f"{what} is not deterministically encoded (RFC 8949 §4.2.1)")
    return obj
