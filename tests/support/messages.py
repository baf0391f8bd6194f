"""Signed gateway messages of an exact size, for tests at the message limit (65,535 bytes:
what a collector accepts and a tlog-tiles entry bundle holds)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof.wire import (
    MAX_READINGS_PER_MESSAGE,
    Payload,
    Reading,
    encode_message,
    gateway_id_for,
    public_key_bytes,
)

#: a missing reading's text ("missing:<reason>") between these lengths has a 2-byte CBOR head,
#: so one more character is one more byte of the message
_TEXT_MIN, _TEXT_MAX = 24, 200


def signed_message_of_size(key: Ed25519PrivateKey, seq: int, size: int) -> bytes:
    """A valid message signed as the gateway does (``encode_message``), exactly ``size`` bytes:
    failed-sensor readings whose reasons are lengthened until the bytes add up."""
    gw = gateway_id_for(public_key_bytes(key))

    def build(lengths: list[int]) -> bytes:
        readings = tuple(
            Reading(f"s{i:04d}", "soil_moisture", "/", None, 1.7e9 + seq, "r" * (n - 8))
            for i, n in enumerate(lengths)
        )
        return encode_message(Payload(gw, seq, 1, readings), key)

    one, two = len(build([_TEXT_MAX])), len(build([_TEXT_MAX] * 2))
    count = max(1, (size - one) // (two - one))  # about as many as the size takes
    while len(build([_TEXT_MAX] * count)) < size:
        count += 1
        assert count <= MAX_READINGS_PER_MESSAGE, f"no valid message of {size} bytes"
    lengths = [_TEXT_MIN] * count
    for _ in range(5):  # a head may change size on the way: measure again
        missing = size - len(build(lengths))
        if missing == 0:
            return build(lengths)
        for i, n in enumerate(lengths):
            step = max(_TEXT_MIN - n, min(_TEXT_MAX - n, missing))
            lengths[i] += step
            missing -= step
    raise AssertionError(f"could not build a message of exactly {size} bytes")
