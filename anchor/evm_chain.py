"""EVM chains behind the chain protocol (:mod:`anchor.chain`): the EVM anchorer
(:mod:`anchor.evm`) and its store, mapped to one row, one step report and one state.

The EVM retry policy stays in :class:`anchor.evm.EvmAnchorer`: a fee that no longer gets the
transaction into a block is bumped on the same nonce, a nonce another transaction took gets a
fresh one, a reorged block sends its anchor back to pending. Its store
(``anchors-evm.sqlite``: tables ``evm_anchors``, ``evm_anchor_txs``) is read as it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anchor import anchoring, evm
from anchor.chain import (
    AnchorRow,
    AnchorSetupError,
    AnchorState,
    CheckpointSource,
    NodeNote,
    StepReport,
    store_path,
)
from anchor.evm_reader import connect
from fieldproof.formats.bundle import AnchorRef

if TYPE_CHECKING:
    from fieldproof.config import CollectorConfig

CHAIN = "evm"


def evm_genesis_of(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """(chain id, genesis block hash) an EVM node reports, so the bundle can name the network
    of its EVM anchors by more than a chain id (any dev chain or fork can reuse an id)."""
    w3 = connect(url, timeout)
    chain_id = int(w3.eth.chain_id)
    block = w3.eth.get_block(0)
    return chain_id, "0x" + bytes(block["hash"]).hex()


class EvmChainAnchorer:
    """:class:`anchor.chain.ChainAnchorer` over :class:`anchor.evm.EvmAnchorer`, anchoring the
    newest checkpoint of ``source`` on each step."""

    chain = CHAIN

    def __init__(self, anchorer: evm.EvmAnchorer, source: CheckpointSource) -> None:
        self.anchorer = anchorer
        self.source = source

    @classmethod
    def from_config(cls, config: CollectorConfig, source: CheckpointSource) -> EvmChainAnchorer:
        a = config.anchor
        if a.chain_id is None:
            raise AnchorSetupError("[anchor] chain_id is required for an EVM chain")
        key = anchoring.load_key(a.key_file, a.key_env)
        anchorer = evm.EvmAnchorer(
            evm.EvmConfig(
                url=a.url, chain_id=a.chain_id, finality=a.finality, confirmations=a.confirmations
            ),
            key.secret_bytes(),
            store_path(config, CHAIN),
        )
        return cls(anchorer, source)

    def step(self) -> StepReport:
        latest = self.source.latest_checkpoint()
        ref = None
        if latest is not None:
            cp, _ = latest
            ref = evm.CheckpointRef(cp.origin, cp.size, cp.root_hash)
        got = self.anchorer.step(ref)
        report = StepReport(problems=list(got.notes), node_ok=got.error is None)
        if got.error is not None:
            report.problems.append(got.error)
        if got.submitted is not None:
            report.created.append(got.submitted.id)
            report.submitted.append(got.submitted.tx_hash)
        for anchor_id, old, new in got.changed:
            if new == "included" or (new == "finalized" and old == "pending"):
                report.included.append(anchor_id)
            if new == "finalized":
                report.finalized.append(anchor_id)
            elif new == "failed":
                report.failed.append(anchor_id)
            elif new == "pending" and old == "included":
                report.reorged.append(anchor_id)
        return report

    def close(self) -> None:
        self.anchorer.close()


class EvmLedger:
    """:class:`anchor.chain.AnchorLedger` of an EVM anchor store."""

    chain = CHAIN

    def __init__(self, path: Path) -> None:
        self.store = evm.EvmAnchorStore(path)

    def rows(self) -> list[AnchorRow]:
        return [
            AnchorRow(
                CHAIN,
                f"evm:{r.chain_id}",
                r.tree_size,
                r.root_hash.hex(),
                AnchorState(r.state),
                r.tx_hash,
                r.block_number,
                r.block_hash,
                r.block_timestamp,
                r.reason,
                origin=r.origin,
                ref=_bundle_ref(r),
            )
            for r in self.store.rows()
        ]

    def node_note(self) -> NodeNote | None:
        """The EVM anchorer keeps no node status between steps."""
        return None

    def genesis_by_network(self, config: CollectorConfig, notes: list[str]) -> dict[str, str]:
        """The genesis of the chain the collector anchors to, asked of its configured node;
        when that fails the bundle says so in its notes and its EVM anchors name only a chain
        id."""
        a = config.anchor
        if a.chain != CHAIN or not a.url:
            return {}
        try:
            chain_id, genesis = evm_genesis_of(a.url)
        except Exception as exc:  # the export must not fail because a node is down
            notes.append(f"the EVM node could not be asked for its genesis block "
                         f"({type(exc).__name__}); EVM anchors name their chain id only")
            return {}
        if a.chain_id is not None and chain_id != a.chain_id:
            notes.append(f"the configured EVM node serves chain id {chain_id}, not {a.chain_id}; "
                         "EVM anchors name their chain id only")
            return {}
        return {str(chain_id): genesis}

    def close(self) -> None:
        self.store.close()


def _bundle_ref(r: evm.AnchorRow) -> AnchorRef | None:
    """The bundle's claim for a finalized anchor (its genesis is added by the export)."""
    if r.state != "finalized" or r.block_hash is None or r.block_number is None:
        return None
    return AnchorRef(CHAIN, str(r.chain_id), str(r.tx_hash).lower(), int(r.block_number),
                     str(r.block_hash).lower(), int(r.block_timestamp or 0))
