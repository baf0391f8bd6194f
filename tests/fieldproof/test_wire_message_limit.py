"""One limit for a message everywhere: the wire codec reads at most 65,535 bytes, what a
collector may accept and a tlog-tiles entry bundle can hold (a message is logged as its exact
bytes). A validly signed message of exactly the limit decodes, on both readers (the exact-form
one and the general path); one byte more is refused by each, as not what can be logged."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof import wire
from fieldproof.config import MAX_LOGGABLE_MESSAGE_BYTES
from fieldproof.formats.bundle import Limits
from fieldproof.formats.tiles import MAX_ENTRY_BYTES
from tests.support.messages import signed_message_of_size

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"wire-message-limit").digest())
PUB = wire.public_key_bytes(KEY)
GW = wire.gateway_id_for(PUB)


def signed(size: int) -> bytes:
    """A valid message signed as a gateway does, exactly ``size`` bytes."""
    return signed_message_of_size(KEY, 1, size)


def test_one_limit() -> None:
    assert wire.MAX_MESSAGE_BYTES == MAX_LOGGABLE_MESSAGE_BYTES == MAX_ENTRY_BYTES == 65_535
    assert Limits().max_entry_bytes == MAX_ENTRY_BYTES


def test_a_message_of_the_limit_decodes_and_one_byte_more_does_not() -> None:
    largest, one_more = signed(wire.MAX_MESSAGE_BYTES), signed(wire.MAX_MESSAGE_BYTES + 1)
    assert (len(largest), len(one_more)) == (65_535, 65_536)

    payload = wire.decode_message(largest, PUB)
    assert wire.encode_message(payload, KEY) == largest  # every reading, as signed
    assert wire.open_message(largest)[0] == GW
    parsed = wire.parse_sign1(largest, require_tag=True)
    assert wire.decode_message_plain(largest, PUB, parsed)[0] == GW

    for read in (
        lambda: wire.parse_sign1(one_more),
        lambda: wire.open_message(one_more),
        lambda: wire.decode_message(one_more, PUB),
        lambda: wire.decode_message_plain(one_more, PUB),
    ):
        with pytest.raises(wire.MalformedMessage, match="65536 bytes; the limit is 65535"):
            read()
