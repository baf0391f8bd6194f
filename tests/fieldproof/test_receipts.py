"""Receipts: compact ranges, exact round trip, hostile input rejected."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldproof.wire import MalformedMessage, decode_receipt, encode_receipt


@given(st.lists(st.integers(1, 2**40), max_size=300))
def test_round_trip(seqs: list[int]) -> None:
    collector, out = decode_receipt(encode_receipt("c1", seqs))
    assert collector == "c1"
    assert out == sorted(set(seqs))


def test_ranges_are_compact() -> None:
    assert encode_receipt("c", [5, 1, 2, 3, 7, 6, 10]) == b'{"c":"c","s":[[1,3],[5,7],[10,10]]}'


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"[]",
        b'{"c": 1, "s": []}',
        b'{"c": "x", "s": [[3, 1]]}',
        b'{"c": "x", "s": [[1]]}',
        b'{"c": "x", "s": [[-1, 2]]}',
        b'{"c": "x", "s": [[1, 1e3]]}',
        b'{"c": "x", "s": [[0, 99999999]]}',
        b"\xff\xfe",
        b"[" * 5000,  # found by atheris: json.loads raised RecursionError past ~995 levels
        b'{"c": "x", "s": [' + b"[1, 2]," * 100_000 + b"[3, 4]]}",  # over the size limit
    ],
)
def test_malformed_rejected(bad: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_receipt(bad, max_seqs=1_000_000)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    """Only MalformedMessage may come out, never another exception."""
    with contextlib.suppress(MalformedMessage):
        decode_receipt(blob)
