"""Reading an anchor back from a VeChainThor node, as an inspector does: the chain reader the
verifier uses. It imports the transaction codec, the node client and the record format, and
nothing of the anchorer (no key, no store): what runs on an inspector's laptop stays small."""

from __future__ import annotations

from dataclasses import dataclass

from anchor import thor
from anchor.thor_client import ThorClient
from fieldproof.errors import ChainError
from fieldproof.formats.anchor_record import AnchorRecord, RecordError


class AnchorVerificationError(ChainError):
    """An anchor does not check out against the chain; the message says which check failed."""


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
    reverted, its block must be on the trunk and (by default) at or below the finalized block,
    and the node must be on ``genesis_id`` when given.
    """
    genesis = client.genesis()
    if genesis_id is not None and genesis.id != genesis_id.lower():
        raise AnchorVerificationError(
            f"node {client.base_url} is on genesis {genesis.id}, the anchor claims {genesis_id}: "
            "ask a node of the right network"
        )
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
    receipt = client.receipt(tx_id)
    if receipt is None or receipt.block_id != meta.block_id:
        raise AnchorVerificationError(f"tx {tx_id} has no receipt in block {meta.block_id}")
    if receipt.reverted:
        raise AnchorVerificationError(f"tx {tx_id} reverted")
    block = client.block(meta.block_id)
    if block is None or not block.is_trunk:
        raise AnchorVerificationError(f"block {meta.block_id} is not on this node's main chain")
    finalized = block.number <= client.finalized_block().number
    if require_finalized and not finalized:
        raise AnchorVerificationError(
            f"block {block.number} holding tx {tx_id} is not finalized yet; check again later"
        )
    return VerifiedAnchor(
        tx_id.lower(), sender, block.number, block.id, block.timestamp, finalized, genesis.id
    )
