"""Reading an anchor back from a VeChainThor node, as an inspector does: the chain reader the
verifier uses. It imports the transaction codec, the node client and the record format, and
nothing of the anchorer (no key, no store): what runs on an inspector's laptop stays small.

Finality on Thor (VIP-220) moves by whole epochs: ``GET /blocks/finalized`` is always a
checkpoint, a block whose number is a multiple of :data:`EPOCH_LENGTH` (180), and it jumps from
one checkpoint to the next. With every epoch committed a checkpoint C is finalized once the head
reaches C + 2 epochs: thor solo's BFT stand-in (``bft.NewSoloMockedEngine``: finalized =
checkpoint(best) − 360) does exactly that, and measured on thor v2.4.4 solo finalized stayed 0
up to best 539, was 180 from best 540 and 360 from best 720. A real network's BFT engine reaches
the same point a block earlier at best (its last block of the epoch after next, C + 359). So a
block M is final once the head reaches about ``ceil(M / 180) · 180 + 360``; at 10 s per block
that is one to 1.5 hours after inclusion.
"""

from __future__ import annotations

from dataclasses import dataclass

from anchor import thor
from anchor.thor_client import Block, ThorClient
from fieldproof.errors import ChainError
from fieldproof.formats.anchor_record import AnchorRecord, RecordError

#: blocks per epoch (thor/config.go ``epochLength``, the same on mainnet, testnet and solo)
EPOCH_LENGTH = 180
#: epochs between a checkpoint and the head when that checkpoint is finalized
FINALITY_EPOCHS = 2


class AnchorVerificationError(ChainError):
    """An anchor does not check out against the chain; the message says which check failed."""


@dataclass(frozen=True)
class FinalityGap:
    """How far block ``block_number`` is from final on a node, and why it is not final yet.

    ``blocks_behind``: how many blocks the node's finalized block must still advance (0 when
    final). ``checkpoint``: the first checkpoint at or above the block, which must be finalized;
    ``expected_at_best``: the best block number at which that normally happens."""

    block_number: int
    finalized_number: int
    best_number: int

    @property
    def final(self) -> bool:
        return self.block_number <= self.finalized_number

    @property
    def blocks_behind(self) -> int:
        return max(0, self.block_number - self.finalized_number)

    @property
    def checkpoint(self) -> int:
        return -(-self.block_number // EPOCH_LENGTH) * EPOCH_LENGTH

    @property
    def expected_at_best(self) -> int:
        return self.checkpoint + FINALITY_EPOCHS * EPOCH_LENGTH

    @property
    def blocks_to_expected(self) -> int:
        """Blocks the head still has to grow until finality is expected (0 if overdue)."""
        return max(0, self.expected_at_best - self.best_number)

    def explain(self) -> str:
        """Why the block is (not) final yet, in the operator's words."""
        if self.final:
            return (
                f"block {self.block_number} is final (node finalized #{self.finalized_number}, "
                f"best #{self.best_number})"
            )
        if self.best_number < self.expected_at_best:
            why = (
                f"Thor finalizes whole {EPOCH_LENGTH}-block epochs: checkpoint "
                f"#{self.checkpoint} is expected final when best reaches "
                f"#{self.expected_at_best}, {_blocks(self.blocks_to_expected)} from now"
            )
        else:
            why = (
                f"checkpoint #{self.checkpoint} was expected final at best "
                f"#{self.expected_at_best} and is not: the network is not finalizing (too few "
                "validators voting), or this node is lagging"
            )
        return (
            f"block {self.block_number} is not final yet: the node's finalized block is "
            f"#{self.finalized_number} (best #{self.best_number}), {_blocks(self.blocks_behind)} "
            f"below it; {why}"
        )

    def to_dict(self) -> dict[str, int | bool | str]:
        return {
            "block_number": self.block_number,
            "finalized_number": self.finalized_number,
            "best_number": self.best_number,
            "final": self.final,
            "blocks_behind": self.blocks_behind,
            "checkpoint": self.checkpoint,
            "expected_at_best": self.expected_at_best,
            "explain": self.explain(),
        }


def _blocks(n: int) -> str:
    return f"{n} block" if n == 1 else f"{n} blocks"


def finality_gap(block_number: int, finalized: Block, best: Block) -> FinalityGap:
    return FinalityGap(block_number, finalized.number, best.number)


@dataclass(frozen=True)
class VerifiedAnchor:
    """What the chain says about an anchor that checked out."""

    tx_id: str
    sender: str
    block_number: int
    block_id: str
    block_timestamp: int
    finalized: bool
    genesis_id: str


def verify_anchor(
    client: ThorClient,
    tx_id: str,
    origin: str,
    tree_size: int,
    root_hash: bytes,
    *,
    genesis_id: str | None = None,
    require_finalized: bool = True,
) -> VerifiedAnchor:
    """Check on chain that ``tx_id`` anchors (origin, tree_size, root_hash), as an inspector would.

    The tx bytes are fetched raw and decoded here (not trusted from the node's JSON): its id is
    recomputed, a clause's data must be the exact anchor record, its receipt must not be
    reverted, its block must be on the trunk and (by default) at or below the finalized block —
    read as the receipt seen from the finalized block (``?head=<finalized id>``), one answer —
    and the node must be on ``genesis_id`` when given.
    """
    genesis = client.genesis()
    if genesis_id is not None and genesis.id != genesis_id.lower():
        raise AnchorVerificationError(
            f"node {client.base_url} is on genesis {genesis.id}, the anchor claims {genesis_id}: "
            "ask a node of the right network"
        )
    finalized = client.finalized_block()
    got = client.raw_transaction(tx_id, pending=True)
    if got is None:
        raise AnchorVerificationError(f"tx {tx_id} is not on this node's chain")
    raw, meta = got
    if meta is None:
        raise AnchorVerificationError(f"tx {tx_id} is known but not in a block yet")
    try:
        tx = thor.decode(raw)
        if tx.id_hex() != tx_id.lower():
            raise AnchorVerificationError(
                f"node returned a tx whose id is {tx.id_hex()}, not {tx_id}"
            )
        sender = "0x" + tx.origin().hex()
    except thor.ThorTxError as e:
        raise AnchorVerificationError(f"tx {tx_id} does not decode: {e}") from None
    if tx.chain_tag != genesis.chain_tag:
        raise AnchorVerificationError(f"tx {tx_id} chain tag {tx.chain_tag} is not this chain's")
    want = AnchorRecord.for_checkpoint(origin, tree_size, root_hash)
    found = False
    for c in tx.clauses:
        try:
            found = found or AnchorRecord.decode(c.data) == want
        except RecordError:
            continue
    if not found:
        raise AnchorVerificationError(
            f"tx {tx_id} carries no anchor record for {origin!r} size {tree_size} "
            f"root {root_hash.hex()}"
        )
    receipt = client.receipt(tx_id, head=finalized.id)
    final = receipt is not None
    if receipt is None:
        receipt = client.receipt(tx_id)
    if receipt is None or receipt.block_id != meta.block_id:
        raise AnchorVerificationError(f"tx {tx_id} has no receipt in block {meta.block_id}")
    if receipt.reverted:
        raise AnchorVerificationError(f"tx {tx_id} reverted")
    block = client.block(meta.block_id)
    if block is None or not block.is_trunk or block.number != receipt.block_number:
        raise AnchorVerificationError(f"block {meta.block_id} is not on this node's main chain")
    if final and block.number > finalized.number:
        raise AnchorVerificationError(
            f"node says block {block.number} is below its finalized block {finalized.number}, "
            "and it is not: the node contradicts itself"
        )
    if require_finalized and not final:
        gap = FinalityGap(block.number, finalized.number, client.best_block().number)
        raise AnchorVerificationError(
            f"block {block.number} holding tx {tx_id} is not finalized yet ({gap.explain()}); "
            "check again later"
        )
    return VerifiedAnchor(
        tx_id.lower(), sender, block.number, block.id, block.timestamp, final, genesis.id
    )
