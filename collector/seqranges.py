"""Which sequence numbers each gateway has delivered, as ranges, kept up to date in memory.

The collector reports sequence gaps (ranges never received, and how many messages they hold)
every few seconds to InfluxDB and Prometheus. Asking SQLite each time means a window query over
every accepted message — seconds at ten million rows. This keeps, per gateway, the sorted
disjoint ranges of received sequence numbers (a gateway sending in order has one), updated per
batch, and running totals, so a report costs nothing and never reads a dict another thread is
changing. Loaded once at start with one query; sequences start at 1, as in
:meth:`collector.store.CollectorStore.gaps`."""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable


class ReceivedRanges:
    def __init__(self) -> None:
        #: gateway -> starts and ends of its received ranges, sorted, disjoint, not adjacent
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        self.gap_ranges = 0
        self.missing_messages = 0

    @classmethod
    def load(cls, db: sqlite3.Connection) -> ReceivedRanges:
        """From the collector's ``received`` table (the "gaps and islands" query, once)."""
        ranges = cls()
        rows = db.execute(
            "SELECT gateway, min(seq), max(seq) FROM ("
            " SELECT gateway, seq, seq - ROW_NUMBER() OVER (PARTITION BY gateway ORDER BY seq)"
            " AS island FROM received"
            ") GROUP BY gateway, island ORDER BY gateway, min(seq)"
        )
        for gateway, first, last in rows:
            ranges._starts.setdefault(str(gateway), []).append(int(first))
            ranges._ends.setdefault(str(gateway), []).append(int(last))
        for gateway in ranges._starts:
            g, m = ranges._gaps_of(gateway)
            ranges.gap_ranges += g
            ranges.missing_messages += m
        return ranges

    def _gaps_of(self, gateway: str) -> tuple[int, int]:
        starts, ends = self._starts.get(gateway), self._ends.get(gateway)
        if not starts or not ends:
            return 0, 0
        held = sum(e - s + 1 for s, e in zip(starts, ends, strict=True))
        leading = 1 if starts[0] > 1 else 0
        return len(starts) - 1 + leading, ends[-1] - held

    def add(self, gateway: str, seqs: Iterable[int]) -> None:
        """Record received sequence numbers (repeats are harmless)."""
        starts = self._starts.setdefault(gateway, [])
        ends = self._ends.setdefault(gateway, [])
        before = self._gaps_of(gateway)
        for seq in seqs:
            if ends and seq == ends[-1] + 1:  # in order: the common case
                ends[-1] = seq
                continue
            i = bisect.bisect_right(starts, seq) - 1
            if i >= 0 and seq <= ends[i]:
                continue  # already held
            joins_left = i >= 0 and ends[i] == seq - 1
            joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
            if joins_left and joins_right:
                ends[i] = ends[i + 1]
                del starts[i + 1], ends[i + 1]
            elif joins_left:
                ends[i] = seq
            elif joins_right:
                starts[i + 1] = seq
            else:
                starts.insert(i + 1, seq)
                ends.insert(i + 1, seq)
        after = self._gaps_of(gateway)
        self.gap_ranges += after[0] - before[0]
        self.missing_messages += after[1] - before[1]

    def ranges(self, gateway: str) -> list[tuple[int, int]]:
        """The received ranges of one gateway, first to last."""
        return list(zip(self._starts.get(gateway, []), self._ends.get(gateway, []), strict=True))
