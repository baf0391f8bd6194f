"""VeChainThor behind the chain protocol (:mod:`anchor.chain`): the Thor anchorer
(:mod:`anchor.anchoring`) and its store, mapped to one row, one step report and one state.

Thor's own retry policy stays in :class:`anchor.anchoring.Anchorer`: an expired blockRef gets a
rebuilt transaction, a refusal an exponential backoff, an unsynced node a pause. Its store
(``anchors-thor.sqlite``: tables ``anchors``, ``anchor_txs``, ``meta``) is read as it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anchor import anchoring
from anchor.chain import AnchorRow, AnchorState, CheckpointSource, NodeNote, StepReport, store_path
from anchor.thor_client import ThorClient
from fieldproof.formats.bundle import AnchorRef

if TYPE_CHECKING:
    from fieldproof.config import CollectorConfig

CHAIN = "thor"


class ThorChainAnchorer:
    """:class:`anchor.chain.ChainAnchorer` over :class:`anchor.anchoring.Anchorer`; owns the
    anchorer's store and node client, and closes them."""

    chain = CHAIN

    def __init__(
        self, anchorer: anchoring.Anchorer, store: anchoring.AnchorStore, client: ThorClient
    ) -> None:
        self.anchorer = anchorer
        self.store = store
        self.client = client

    @classmethod
    def from_config(cls, config: CollectorConfig, source: CheckpointSource) -> ThorChainAnchorer:
        a = config.anchor
        key = anchoring.load_key(a.key_file, a.key_env)
        sponsor = anchoring.load_key_file(a.sponsor_key_file) if a.sponsor_key_file else None
        store = anchoring.AnchorStore(store_path(config, CHAIN))
        client = ThorClient(a.url)
        try:
            anchorer = anchoring.Anchorer(store, client, source, key, sponsor=sponsor)
        except BaseException:
            store.close()
            client.close()
            raise
        return cls(anchorer, store, client)

    def step(self) -> StepReport:
        got = self.anchorer.step()
        return StepReport(
            created=list(got.created),
            submitted=list(got.submitted),
            included=list(got.included),
            finalized=list(got.finalized),
            failed=list(got.failed),
            reorged=list(got.reorged),
            problems=list(got.errors),
            node_ok=got.node_ok,
            paused=got.paused,
            not_final={i: gap.explain() for i, gap in got.not_final.items()},
        )

    def close(self) -> None:
        self.anchorer.close()
        self.store.close()
        self.client.close()


class ThorLedger:
    """:class:`anchor.chain.AnchorLedger` of a Thor anchor store."""

    chain = CHAIN

    def __init__(self, path: Path) -> None:
        self.store = anchoring.AnchorStore(path)

    def rows(self) -> list[AnchorRow]:
        status = anchoring.node_status(self.store)
        rows = []
        for r in reversed(anchoring.anchor_status(self.store)):  # stored newest first
            gap = None if status is None else anchoring.finality_gap_of(r, status)
            rows.append(
                AnchorRow(
                    CHAIN,
                    r.genesis_id or "",
                    r.tree_size,
                    r.root_hash.hex(),
                    AnchorState(r.state),
                    r.tx_id,
                    r.block_number,
                    r.block_id,
                    r.block_timestamp,
                    r.failure_reason,
                    anchoring.anchor_detail(r, status),
                    None if gap is None else gap.blocks_behind,
                    None if gap is None else gap.expected_at_best,
                    None if gap is None else gap.finalized_number,
                    None if gap is None else gap.best_number,
                    origin=r.origin,
                    ref=_bundle_ref(r),
                )
            )
        return rows

    def node_note(self) -> NodeNote | None:
        status = anchoring.node_status(self.store)
        if status is None:
            return None
        return NodeNote("Thor", status.checked_at, status.explain(),
                        None if status.synced else status.reason)

    def genesis_by_network(self, config: CollectorConfig, notes: list[str]) -> dict[str, str]:
        """Nothing to ask: a Thor anchor's network is its genesis id."""
        return {}

    def close(self) -> None:
        self.store.close()


def _bundle_ref(r: anchoring.AnchorRow) -> AnchorRef | None:
    """The bundle's claim for a finalized anchor that names its whole place on chain."""
    if r.state is not AnchorState.FINALIZED or None in (
        r.genesis_id, r.tx_id, r.block_id, r.block_number, r.block_timestamp
    ):
        return None
    return AnchorRef(CHAIN, str(r.genesis_id).lower(), str(r.tx_id).lower(),
                     int(r.block_number or 0), str(r.block_id).lower(),
                     int(r.block_timestamp or 0))
