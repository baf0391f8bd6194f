"""The seal part of an export (docs/bundle.md §4b): the completeness seal that ends the claim's
checkpoint, and the scope's farm records with their inner inclusion proofs: a farm's record (or
the neighbours proving it has none), for one gateway without a farm the records listing it,
else every record.

Kept apart from :mod:`collector.export` so the exporter only calls one function. The records
come from what the collector stored when it wrote the seal; when they are no longer kept (or the
database predates them) they are rebuilt from the log itself, which the seal is a pure function
of, and checked against the seal's root either way."""

from __future__ import annotations

from anchor.evidence import EvidenceLog
from anchor.logstore import MerkleLog
from fieldproof.errors import ConfigError
from fieldproof.formats.bundle import Scope, SealFarm, SealProof
from fieldproof.formats.seal import (
    SealAccumulator,
    SealError,
    decode_farm_record,
    decode_seal,
    farm_proofs,
    farms_root,
    gateway_positions,
    scope_positions,
)

__all__ = ["SealExportError", "seal_for_export"]

_REBUILD_BATCH = 5000


class SealExportError(ConfigError):
    """The log's seal and its stored farm records disagree; the message says what to check."""


def _rebuild(log: MerkleLog, below: int) -> list[bytes]:
    acc = SealAccumulator()
    while acc.size < below:
        acc.add(log.entries(acc.size, min(below, acc.size + _REBUILD_BATCH)))
    return acc.seal()[1]


def seal_for_export(evidence: EvidenceLog, log: MerkleLog, size: int, scope: Scope,
                    notes: list[str]) -> SealProof | None:
    """The seal of the checkpoint of ``size`` with the farm records ``scope`` needs, or None
    (and a note saying so) when that checkpoint does not end with a seal (an older log)."""
    entry = log.entry(size - 1)
    try:
        seal = decode_seal(entry)
    except SealError:
        notes.append(f"the log's checkpoint at tree size {size} does not end with a "
                     "completeness seal (it was signed before the collector wrote seals): "
                     "this bundle's completeness rests on the signed claim only")
        return None
    if seal.size != size - 1:
        raise SealExportError(f"the seal at log index {size - 1} says it is at index "
                              f"{seal.size}: the log database is damaged")
    records = evidence.seal_records(seal.size)
    if records is None or farms_root(records) != seal.root:
        records = _rebuild(log, seal.size)
    if len(records) != seal.farms or farms_root(records) != seal.root:
        raise SealExportError(
            f"the seal at log index {seal.size} does not match the log's entries before it "
            "(its farm records give another root): the log was written by something else or "
            "is damaged; check it with fieldproof log mirror --entries")
    decoded = [decode_farm_record(r) for r in records]
    positions = None
    if scope.farm is None and scope.gateway is not None:
        # one gateway's bundle shows only the farms it is enrolled in: another farm's gateway
        # ids are that farm's data (the verifier knows the gateway's farms from its registry
        # events, which the record counts)
        positions = gateway_positions(decoded, scope.gateway, scope.field)
        if positions is None:
            notes.append(
                f"the log's seal at index {seal.size} lists {scope.gateway} in no farm record"
                + (f" for field {scope.field!r}" if scope.field is not None else "")
                + ": only every farm record shows that, so this bundle carries them all "
                "(their gateway ids included)")
    if positions is None:
        positions = scope_positions([r.farm for r in decoded], scope.farm)
    proofs = farm_proofs(records, positions)
    return SealProof(size, entry, tuple(
        SealFarm(p, records[p], tuple(proof)) for p, proof in zip(positions, proofs, strict=True)))
