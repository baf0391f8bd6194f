"""ReceivedRanges (in-memory gap tracking) agrees with the SQL definition of gaps.

Random sequence numbers for a few gateways arrive in random order and random batches (with
repeats); after every batch the running totals must equal what CollectorStore.gaps() computes
from the received table, and loading from that table must give the same ranges."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.seqranges import ReceivedRanges
from collector.store import AcceptedRow, CollectorStore

_arrivals = st.lists(
    st.tuples(st.sampled_from(["gw-a", "gw-b", "gw-c"]), st.integers(1, 60)),
    min_size=1,
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(arrivals=_arrivals, batch=st.integers(1, 20))
def test_totals_match_the_sql_gaps_after_every_batch(
    arrivals: list[tuple[str, int]], batch: int
) -> None:
    db = sqlite3.connect(":memory:")
    store = CollectorStore(db)
    ranges = ReceivedRanges()
    held: set[tuple[str, int]] = set()
    for lo in range(0, len(arrivals), batch):
        chunk = arrivals[lo : lo + batch]
        fresh = sorted({a for a in chunk if a not in held})
        held.update(fresh)
        store.commit([AcceptedRow(g, s, 1, 1, f"{g}/{s}".encode()) for g, s in fresh], [], {})
        by_gateway: dict[str, list[int]] = {}
        for g, s in chunk:  # arrival order, repeats included
            by_gateway.setdefault(g, []).append(s)
        for g, seqs in by_gateway.items():
            ranges.add(g, seqs)
        gaps = store.gaps()
        assert ranges.gap_ranges == len(gaps)
        assert ranges.missing_messages == sum(x.size for x in gaps)
    loaded = ReceivedRanges.load(db)
    for g in ("gw-a", "gw-b", "gw-c"):
        assert loaded.ranges(g) == ranges.ranges(g)
        seqs = sorted(s for gw, s in held if gw == g)
        assert sum(e - s + 1 for s, e in ranges.ranges(g)) == len(seqs)
    assert (loaded.gap_ranges, loaded.missing_messages) == (
        ranges.gap_ranges,
        ranges.missing_messages,
    )
