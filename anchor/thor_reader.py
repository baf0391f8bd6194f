"""Reading an anchor back from a VeChainThor node, as an inspector does: the chain reader the
verifier uses. It imports the transaction codec, the node client and the record format, and
nothing of the anchorer (no key, no store): what runs on an inspector's laptop stays small.
:class:`ThorChainReader` is its :class:`anchor.chain_reader.ChainReader`.

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

import logging
import time
from dataclasses import dataclass
from typing import Any

from anchor import thor
from anchor.chain_reader import (
    DEFAULT_SCAN_BLOCKS,
    DEFAULT_SCAN_SECONDS,
    MAX_BLOCK_TRANSACTIONS,
    AnchorReadError,
    AnchorScan,
    ChainAnchor,
    ChainMismatchError,
    ChainNodeUnavailable,
    NodeAnswerError,
    ScannedBlock,
    walk_blocks,
)
from anchor.thor_client import MAX_BLOCK_ANSWER_BYTES, Block, ThorClient, TxMeta
from fieldproof.errors import ChainError
from fieldproof.formats.anchor_record import RECORD_SIZE, AnchorRecord, RecordError

log = logging.getLogger("fieldproof.anchor.thor_reader")

#: blocks per epoch (thor/config.go ``epochLength``, the same on mainnet, testnet and solo)
EPOCH_LENGTH = 180
#: epochs between a checkpoint and the head when that checkpoint is finalized
FINALITY_EPOCHS = 2


class AnchorVerificationError(AnchorReadError):
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
    got = _fetch_tx(client, tx_id, genesis_id)
    want = AnchorRecord.for_checkpoint(origin, tree_size, root_hash)
    if want not in _records(got.tx):
        raise AnchorVerificationError(
            f"tx {tx_id} carries no anchor record for {origin!r} size {tree_size} "
            f"root {root_hash.hex()}"
        )
    block, final = _locate(client, tx_id, got, require_finalized=require_finalized)
    return VerifiedAnchor(
        tx_id.lower(), got.sender, block.number, block.id, block.timestamp, final, got.genesis.id
    )


def read_anchor(
    client: ThorClient, tx_id: str, *, genesis_id: str | None = None
) -> ChainAnchor:
    """The anchor record ``tx_id`` carries (its first clause that is one), its block and whether
    that block is final, checked as :func:`verify_anchor` checks, without knowing the record
    beforehand: what a :class:`ChainReader` returns."""
    got = _fetch_tx(client, tx_id, genesis_id)
    records = _records(got.tx)
    if not records:
        raise AnchorVerificationError(f"tx {tx_id} carries no fieldproof anchor record")
    block, final = _locate(client, tx_id, got, require_finalized=False)
    return ChainAnchor(
        "thor", got.genesis.id, tx_id.lower(), got.sender, records[0], block.number, block.id,
        block.timestamp, final,
    )


class ThorChainReader:
    """:class:`anchor.chain_reader.ChainReader` for VeChainThor: one node, optionally pinned to
    a network by its genesis id. Built from a URL, its client bounds every answer as any
    :class:`~anchor.thor_client.ThorClient` does, each within ``timeout`` seconds."""

    chain = "thor"

    def __init__(self, url_or_client: str | ThorClient, *, genesis_id: str | None = None,
                 timeout: float = 10.0) -> None:
        self._own = isinstance(url_or_client, str)
        self.client = (ThorClient(url_or_client, timeout=timeout, retries=1, answer_s=timeout)
                       if isinstance(url_or_client, str) else url_or_client)
        self.genesis_id = genesis_id

    def read_anchor(self, tx_id: str) -> ChainAnchor:
        return read_anchor(self.client, tx_id, genesis_id=self.genesis_id)

    def genesis(self) -> str:
        return self.client.genesis().id.lower()

    def scan_anchors(self, origin: str, from_block: int, to_block: int | None = None, *,
                     max_blocks: int = DEFAULT_SCAN_BLOCKS,
                     max_seconds: float | None = DEFAULT_SCAN_SECONDS) -> AnchorScan:
        return scan_anchors(self.client, origin, from_block, to_block, max_blocks=max_blocks,
                            genesis_id=self.genesis_id, max_seconds=max_seconds)

    def close(self) -> None:
        if self._own:
            self.client.close()


def scan_anchors(
    client: ThorClient,
    origin: str,
    from_block: int,
    to_block: int | None = None,
    *,
    max_blocks: int = DEFAULT_SCAN_BLOCKS,
    genesis_id: str | None = None,
    max_seconds: float | None = DEFAULT_SCAN_SECONDS,
) -> AnchorScan:
    """Every anchor of log ``origin`` in a bounded block range (see
    :meth:`anchor.chain_reader.ChainReader.scan_anchors`). Thor offers no filter that selects
    them: an anchor clause sends 0 VET with data and emits no event, and thor records a transfer
    only when value moves (``runtime.go``: ``if amount.Sign() == 0 { return }``), so
    ``/logs/transfer`` and ``/logs/event`` never list it. Each block is read expanded
    (``GET /blocks/{n}?expanded=true``, one request) and checked (:func:`_expanded_block`); a
    clause whose data is this log's record makes its tx a candidate, which is then read back
    from its raw bytes exactly as :func:`read_anchor` does (the node's JSON only says where to
    look) and must be in the block that listed it."""
    if from_block < 0 or max_blocks < 1:
        raise ValueError("from_block must be >= 0 and max_blocks >= 1")
    started = time.monotonic()
    genesis = client.genesis()
    if genesis_id is not None and genesis.id != genesis_id.lower():
        raise ChainMismatchError(
            f"node {client.base_url} is on genesis {genesis.id}, not {genesis_id}: ask a node "
            "of the network the anchors name")
    head = client.best_block().number
    if head < 0:
        raise NodeAnswerError(f"node {client.base_url} says its best block is {head}")
    last = head if to_block is None else min(to_block, head)
    scan = AnchorScan("thor", from_block, from_block - 1, head, complete=False)
    if head < from_block:
        scan.stopped = (f"the node's best block is {head}, below block {from_block} where the "
                        "scan starts: it is behind, or hides blocks; ask another node")
        return scan

    def read_block(number: int) -> ScannedBlock:
        block_id, parent_id, txs = _expanded_block(client, number, head)
        return ScannedBlock(block_id, parent_id, len(txs), [
            tx_id for tx_id, clauses, reverted in txs
            if not reverted and any(_is_record_of(d, origin) for d in clauses)])

    candidates = walk_blocks(scan, last, max_blocks, max_seconds, started, read_block)
    _read_back(client, origin, genesis.id, candidates, scan)
    return scan


def _read_back(client: ThorClient, origin: str, genesis_id: str, candidates: dict[str, int],
               scan: AnchorScan) -> None:
    """Each candidate read back from its raw bytes into ``scan``; one the node cannot or will
    not give is ``unreadable``, and once the node stops answering the rest are too, unasked."""
    down = ""
    for tx_id, listed_in in candidates.items():
        if down:
            scan.unreadable.append((tx_id, f"not read back: {down}"))
            continue
        try:
            got = _fetch_tx(client, tx_id, genesis_id)
            block, final = _locate(client, tx_id, got, require_finalized=False)
            if block.number != listed_in:
                raise AnchorVerificationError(
                    f"the node listed it in block {listed_in} but places it in block "
                    f"{block.number}")
        except ChainNodeUnavailable as exc:
            down = f"the node stopped answering ({str(exc)[:200]})"
            scan.unreadable.append((tx_id, down))
            continue
        except ChainError as exc:
            scan.unreadable.append((tx_id, str(exc)[:400]))
            continue
        for record in _records(got.tx):
            if record.matches(origin):
                scan.anchors.append(ChainAnchor(
                    "thor", got.genesis.id, tx_id, got.sender, record, block.number, block.id,
                    block.timestamp, final))


def _id32(value: Any, what: str) -> str:
    """A ``0x``-prefixed 32-byte hex id from a node's JSON, lower-cased, or NodeAnswerError."""
    if isinstance(value, str) and len(value) == 66 and value[:2] in ("0x", "0X"):
        try:
            bytes.fromhex(value[2:])
            return value.lower()
        except ValueError:
            pass
    raise NodeAnswerError(f"{what} is not a 0x-prefixed 32-byte hex id: {repr(value)[:80]}")


def _expanded_block(
    client: ThorClient, number: int, head: int
) -> tuple[str, str, list[tuple[str, list[bytes], bool]]]:
    """Block ``number`` as the node describes it (``expanded=true``): its id, its parent's id
    and per transaction (id, each clause's data, reverted), every field checked, since the node
    may lie in any of them. Read through the client's own request plumbing (retries, genesis
    header, errors, and its bounds on an answer's bytes and time, here a block's): a reader in
    the same package, not a new public call on the anchorer's client."""
    path = f"GET /blocks/{number}?expanded=true"
    data = client._json("GET", f"/blocks/{number}", params={"expanded": "true"},
                        limit=MAX_BLOCK_ANSWER_BYTES)
    if data is None:
        raise NodeAnswerError(f"{path}: the node has no block {number}, yet said its best block "
                              f"is {head}")
    if not isinstance(data, dict):
        raise NodeAnswerError(f"{path}: the block is not a JSON object: {repr(data)[:200]}")
    got = data.get("number")
    if not isinstance(got, int) or isinstance(got, bool) or got != number:
        raise NodeAnswerError(f"{path}: the node answered block {repr(got)[:40]} for block "
                              f"{number}")
    block_id, parent_id = _id32(data.get("id"), "its id"), _id32(data.get("parentID"), "parentID")
    if int(block_id[2:10], 16) != number:
        raise NodeAnswerError(f"{path}: block id {block_id} does not start with its number")
    txs = data.get("transactions")
    if not isinstance(txs, list):
        raise NodeAnswerError(f"{path}: transactions is not a list: {repr(txs)[:200]}")
    if len(txs) > MAX_BLOCK_TRANSACTIONS:
        raise NodeAnswerError(f"{path}: the block lists {len(txs):,} transactions, more than "
                              f"any block holds ({MAX_BLOCK_TRANSACTIONS:,})")
    out = []
    for i, tx in enumerate(txs):
        if not isinstance(tx, dict):
            raise NodeAnswerError(f"{path}: transaction {i} is not a JSON object (the node "
                                  "ignored expanded=true?)")
        tx_id = _id32(tx.get("id"), f"transaction {i}'s id")
        clauses, reverted = tx.get("clauses"), tx.get("reverted", False)
        if not isinstance(clauses, list) or not isinstance(reverted, bool):
            raise NodeAnswerError(f"{path}: transaction {tx_id} has no clause list or no "
                                  "boolean reverted")
        datas = []
        for c in clauses:
            hexdata = c.get("data") if isinstance(c, dict) else None
            try:
                if not isinstance(hexdata, str) or hexdata[:2] != "0x":
                    raise ValueError
                raw = bytes.fromhex(hexdata[2:])
            except ValueError:
                raise NodeAnswerError(f"{path}: a clause of transaction {tx_id} has no "
                                      f"0x-hex data: {repr(hexdata)[:80]}") from None
            if len(raw) == RECORD_SIZE:  # only what can be a record is kept
                datas.append(raw)
        out.append((tx_id, datas, reverted))
    return block_id, parent_id, out


def _is_record_of(data: bytes, origin: str) -> bool:
    try:
        return AnchorRecord.decode(data).matches(origin)
    except RecordError:
        return False


@dataclass(frozen=True)
class _FetchedTx:
    genesis: Block
    finalized: Block
    tx: thor.Transaction
    meta: TxMeta
    sender: str


def _fetch_tx(client: ThorClient, tx_id: str, genesis_id: str | None) -> _FetchedTx:
    """The tx's own bytes from the node, decoded and checked: in a block, id recomputed, this
    chain's tag, and the node on ``genesis_id`` when given."""
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
    return _FetchedTx(genesis, finalized, tx, meta, sender)


def _records(tx: thor.Transaction) -> list[AnchorRecord]:
    """Every clause's data that decodes as an anchor record, in clause order."""
    out = []
    for c in tx.clauses:
        try:
            out.append(AnchorRecord.decode(c.data))
        except RecordError:
            continue
    return out


def _locate(
    client: ThorClient, tx_id: str, got: _FetchedTx, *, require_finalized: bool
) -> tuple[Block, bool]:
    """The trunk block holding the tx with a receipt that is not reverted, and whether it is
    final (its receipt is seen from the finalized block)."""
    meta, finalized = got.meta, got.finalized
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
    return block, final
