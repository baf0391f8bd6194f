"""``fieldproof anchor run``: anchor the collector's newest checkpoint on the configured chain.

Runs beside the collector (its own process, its own lock): it reads checkpoints from the
collector's database — it never needs the log key — and keeps anchor states in a store of its
own next to it (``anchors-thor.sqlite`` or ``anchors-evm.sqlite``). Every chain is used through
the protocol of :mod:`anchor.chain`: ``step()`` submits the newest un-anchored checkpoint and
advances pending → included → finalized (or failed, with a reason)."""

from __future__ import annotations

import logging
import threading

from anchor.chain import AnchorRow, AnchorSetupError, NodeNote, anchor_rows, make_anchorer
from anchor.chain import open_ledgers as open_ledgers
from anchor.chain import store_path as store_path
from anchor.evidence import EvidenceLog
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db

__all__ = [
    "AnchorService",
    "AnchorSetupError",
    "AnchorView",
    "anchor_views",
    "node_notes",
    "open_ledgers",
    "store_path",
]

log = logging.getLogger("fieldproof.anchor")

#: one anchor, the same for every chain (the name callers used before the chain protocol)
AnchorView = AnchorRow


class AnchorService:
    """The configured chain's anchorer over the collector's evidence log."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.db = open_db(config.db_path)
        try:
            self.evidence = EvidenceLog.open(self.db, config.log_origin, key_file=None)
            self.anchorer = make_anchorer(config, self.evidence)
        except BaseException:
            self.db.close()
            raise

    def step(self) -> bool:
        """One pass; True when the node answered."""
        report = self.anchorer.step()
        # a node that could not be used is logged by the anchorer itself (it also runs without
        # this service): said once here would be said twice
        for problem in report.problems if report.node_ok else ():
            log.warning("%s", problem)
        for anchor_id in report.included:
            log.info("anchor %d included", anchor_id)
        for anchor_id in report.finalized:
            log.info("anchor %d finalized", anchor_id)
        for anchor_id in report.failed:
            log.info("anchor %d failed", anchor_id)
        for anchor_id in report.reorged:
            log.info("anchor %d: its block left the chain; pending again", anchor_id)
        for anchor_id, why in report.not_final.items():
            log.info("anchor %d: %s", anchor_id, why)
        return report.node_ok

    def run(self, stop: threading.Event) -> None:
        delay = self.config.anchor.interval_s
        while not stop.is_set():
            ok = self.step()
            delay = self.config.anchor.interval_s if ok else min(delay * 2, 600.0)
            stop.wait(delay)

    def close(self) -> None:
        self.anchorer.close()
        self.db.close()


def anchor_views(config: CollectorConfig) -> list[AnchorRow]:
    """Every anchor recorded for this collector, on whichever chains it used."""
    return anchor_rows(config)


def node_notes(config: CollectorConfig) -> list[NodeNote]:
    """What each chain's node said at its anchorer's last step, where the chain keeps that."""
    notes = []
    for ledger in open_ledgers(config):
        try:
            note = ledger.node_note()
        finally:
            ledger.close()
        if note is not None:
            notes.append(note)
    return notes
