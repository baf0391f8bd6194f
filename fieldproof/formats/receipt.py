"""Receipts: collector → gateway "I have these sequence numbers durably" (JSON ranges)."""

from __future__ import annotations

import json

from fieldproof.formats.cbor import MalformedMessage
from fieldproof.formats.payload import MAX_SEQ

MAX_RECEIPT_RANGES = 10_000


#: the longest receipt: MAX_RECEIPT_RANGES ranges of two 19-digit numbers, with room to spare
MAX_RECEIPT_BYTES = 512 * 1024


def encode_receipt(collector: str, seqs: list[int]) -> bytes:
    """A receipt as compact JSON: ``{"c": collector id, "s": [[first, last], ...]}``."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return json.dumps({"c": collector, "s": ranges}, separators=(",", ":")).encode()


def decode_receipt(data: bytes, max_seqs: int = 1_000_000) -> tuple[str, list[int]]:
    """Parse a receipt; raise :class:`MalformedMessage` on anything unexpected."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise MalformedMessage(f"receipt is {len(data)} bytes; the limit is {MAX_RECEIPT_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: "[[[[..."
        raise MalformedMessage("receipt is not JSON") from None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("c"), str)
        or not isinstance(obj.get("s"), list)
    ):
        raise MalformedMessage('receipt must be {"c": str, "s": [[first, last], ...]}')
    if len(obj["s"]) > MAX_RECEIPT_RANGES:
        raise MalformedMessage("receipt has too many ranges")
    seqs: list[int] = []
    for item in obj["s"]:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(type(x) is int and 0 <= x <= MAX_SEQ for x in item)
            or item[0] > item[1]
            or len(seqs) + item[1] - item[0] + 1 > max_seqs
        ):
            raise MalformedMessage("receipt range must be [first, last] with first <= last")
        seqs.extend(range(item[0], item[1] + 1))
    return obj["c"], seqs
