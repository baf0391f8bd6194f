"""Reading an anchor back from any EVM chain through web3.py, as an inspector does: the chain
reader the verifier uses, with the errors the EVM anchorer (:mod:`anchor.evm`) shares. Nothing
here holds a key or a store. :class:`EvmChainReader` is its
:class:`anchor.chain_reader.ChainReader`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

import requests
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import (
    BadResponseFormat,
    BlockNotFound,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionNotFound,
    Web3RPCError,
    Web3ValueError,
)
from web3.middleware import ExtraDataToPOAMiddleware

from anchor.chain_reader import (
    DEFAULT_SCAN_BLOCKS,
    MAX_SCAN_ANCHORS,
    AnchorReadError,
    AnchorScan,
    ChainAnchor,
    ChainMismatchError,
    ChainNodeUnavailable,
)
from fieldproof.errors import ChainError
from fieldproof.formats.anchor_record import AnchorRecord, RecordError

FinalityMode = Literal["auto", "finalized", "confirmations"]

_T = TypeVar("_T")

# Errors that mean "the node could not be asked right now": retry later, change nothing.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    ProviderConnectionError,
    TooManyRequests,
    RequestTimedOut,
    BadResponseFormat,
    ConnectionError,
    TimeoutError,
)


class EvmAnchorError(ChainError):
    """Base class of everything the EVM reader and anchorer raise on purpose."""


class NodeUnavailableError(EvmAnchorError, ChainNodeUnavailable):
    """The JSON-RPC node did not answer; nothing was changed, try again later."""


class ChainIdMismatchError(EvmAnchorError, ChainMismatchError):
    """The node serves another chain than configured: fix the node URL or the chain id."""


class EvmConfigError(EvmAnchorError):
    """The configuration cannot work with this node or key; the message says what to change."""


class AnchorNotFoundError(EvmAnchorError, AnchorReadError):
    """The transaction is unknown to the node, not yet in a block, or reverted."""


class NotAnAnchorError(EvmAnchorError, AnchorReadError):
    """The transaction exists but its calldata is not a fieldproof anchor record."""


class AnchorOnChain(NamedTuple):
    """An anchor as a verifier reads it from a node."""

    record: AnchorRecord
    block_number: int
    block_hash: str
    timestamp: int
    finalized: bool
    sender: ChecksumAddress
    tx_hash: HexStr


def connect(url: str, timeout_s: float = 10.0) -> Web3:
    """A Web3 client for one JSON-RPC URL, without web3's own retries (``step`` retries), and
    tolerant of proof-of-authority chains whose blocks carry long ``extraData``."""
    provider = HTTPProvider(url, request_kwargs={"timeout": timeout_s},
                            exception_retry_configuration=None)
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def rpc_message(exc: Web3RPCError) -> str:
    resp = getattr(exc, "rpc_response", None)
    if isinstance(resp, dict) and isinstance(resp.get("error"), dict):
        return str(resp["error"].get("message", exc))
    return str(exc)


def ask_node(url: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except TRANSIENT_ERRORS as exc:
        raise NodeUnavailableError(f"EVM node {url} did not answer: {type(exc).__name__}") from exc


def check_chain_id(w3: Web3, url: str, expected: int) -> None:
    actual = ask_node(url, lambda: int(w3.eth.chain_id))
    if actual != expected:
        raise ChainIdMismatchError(
            f"EVM node {url} serves chain id {actual}, but chain id {expected} is configured: "
            "point the URL at a node of the intended chain or correct the chain id. "
            "Nothing was signed or sent."
        )


def final_block_number(w3: Web3, url: str, mode: FinalityMode, confirmations: int,
                  head_number: int) -> int:
    """Highest block number that counts as final under ``mode``."""
    if mode != "confirmations":
        try:
            block = w3.eth.get_block("finalized")
            return int(block["number"])
        except (Web3RPCError, BlockNotFound, Web3ValueError, KeyError) as exc:
            if mode == "finalized":
                raise EvmConfigError(
                    f"EVM node {url} does not serve the 'finalized' block tag ({exc}); "
                    "configure finality='confirmations' with a confirmation count for this chain"
                ) from None
    return head_number - confirmations + 1


def read_anchor(
    source: str | Web3,
    tx_hash: str | bytes,
    *,
    chain_id: int | None = None,
    finality: FinalityMode = "auto",
    confirmations: int = 12,
) -> AnchorOnChain:
    """Read and decode the anchor record of ``tx_hash`` from a node, for verifiers.

    ``finalized`` is judged by the node's ``finalized`` tag (or ``confirmations``) and by the
    block at that height still being the one holding the transaction. Pass ``chain_id`` to be
    sure the node serves the chain the bundle names.
    """
    w3 = connect(source) if isinstance(source, str) else source
    url = source if isinstance(source, str) else "(web3 client)"
    if chain_id is not None:
        check_chain_id(w3, url, chain_id)
    h = HexBytes(tx_hash)
    hex_hash = "0x" + h.hex()
    try:
        tx = ask_node(url, lambda: w3.eth.get_transaction(h))
        receipt = ask_node(url, lambda: w3.eth.get_transaction_receipt(h))
    except TransactionNotFound:
        raise AnchorNotFoundError(
            f"transaction {hex_hash} is not in a block on the chain of {url} (unknown or pending)"
        ) from None
    if int(receipt["status"]) != 1:
        raise AnchorNotFoundError(f"transaction {hex_hash} reverted: it anchors nothing")
    try:
        record = AnchorRecord.decode(bytes(tx["input"]))
    except RecordError as exc:
        raise NotAnAnchorError(
            f"transaction {hex_hash} is not a fieldproof anchor: {exc}") from None
    number = int(receipt["blockNumber"])
    block_hash = bytes(receipt["blockHash"])
    block = ask_node(url, lambda: w3.eth.get_block(number))
    canonical = bytes(block["hash"]) == block_hash
    head = ask_node(url, lambda: int(w3.eth.block_number))
    final_height = ask_node(
        url, lambda: final_block_number(w3, url, finality, confirmations, head)
    )
    return AnchorOnChain(
        record=record,
        block_number=number,
        block_hash="0x" + block_hash.hex(),
        timestamp=int(block["timestamp"]),
        finalized=canonical and number <= final_height,
        sender=Web3.to_checksum_address(tx["from"]),
        tx_hash=HexStr(hex_hash),
    )


def genesis_hash(w3: Web3, url: str) -> str:
    """The hash of block 0 as the node reports it (``eth_getBlockByNumber("0x0")``): the chain
    id alone does not tell a network from a copy reusing its id."""
    block = ask_node(url, lambda: w3.eth.get_block(0))
    return "0x" + bytes(block["hash"]).hex()


class EvmChainReader:
    """:class:`anchor.chain_reader.ChainReader` for an EVM chain: one JSON-RPC node, optionally
    pinned to a chain id; finality by the node's ``finalized`` tag, else ``confirmations``."""

    chain = "evm"

    def __init__(self, url: str, *, chain_id: int | None = None, confirmations: int = 12,
                 timeout_s: float = 10.0) -> None:
        self.url = url
        self.chain_id = chain_id
        self.confirmations = confirmations
        self.w3 = connect(url, timeout_s)

    def _network(self) -> int:
        return self.chain_id if self.chain_id is not None else ask_node(
            self.url, lambda: int(self.w3.eth.chain_id))

    def read_anchor(self, tx_id: str) -> ChainAnchor:
        got = read_anchor(self.w3, tx_id, chain_id=self.chain_id,
                          confirmations=self.confirmations)
        return ChainAnchor("evm", str(self._network()), got.tx_hash.lower(), str(got.sender),
                           got.record, got.block_number, got.block_hash, got.timestamp,
                           got.finalized)

    def genesis(self) -> str:
        return genesis_hash(self.w3, self.url).lower()

    def scan_anchors(self, origin: str, from_block: int, to_block: int | None = None, *,
                     max_blocks: int = DEFAULT_SCAN_BLOCKS) -> AnchorScan:
        """Every anchor of ``origin`` in a bounded block range: each block is read with its
        transactions (``eth_getBlockByNumber(n, true)``, one request); a transaction whose
        calldata is this log's record is read back as :meth:`read_anchor` does (receipt status,
        canonical block, finality). JSON-RPC has no filter on calldata, and an anchor emits
        no log, so ``eth_getLogs`` cannot find it."""
        if from_block < 0 or max_blocks < 1:
            raise ValueError("from_block must be >= 0 and max_blocks >= 1")
        if self.chain_id is not None:
            check_chain_id(self.w3, self.url, self.chain_id)
        head = ask_node(self.url, lambda: int(self.w3.eth.block_number))
        last = head if to_block is None else min(to_block, head)
        end = min(last, from_block + max_blocks - 1)
        scan = AnchorScan("evm", from_block, end, head, complete=end >= last)
        candidates: list[str] = []
        def full_block(n: int) -> Any:
            return ask_node(self.url, lambda: self.w3.eth.get_block(n, True))

        for number in range(from_block, end + 1):
            block = full_block(number)
            for tx in block.get("transactions") or ():
                scan.transactions_seen += 1
                if isinstance(tx, bytes | str):
                    continue  # a node that ignored full_transactions: nothing to read
                try:
                    if AnchorRecord.decode(bytes(tx["input"])).matches(origin):
                        candidates.append("0x" + bytes(tx["hash"]).hex())
                except (RecordError, KeyError, TypeError, ValueError):
                    continue
            if len(candidates) > MAX_SCAN_ANCHORS:
                scan.last_block, scan.complete = number, False
                break
        network = str(self._network())
        for tx_hash in dict.fromkeys(candidates):
            try:
                got = read_anchor(self.w3, tx_hash, confirmations=self.confirmations)
            except AnchorReadError as exc:
                scan.unreadable.append((tx_hash, str(exc)))
                continue
            scan.anchors.append(ChainAnchor(
                "evm", network, got.tx_hash.lower(), str(got.sender), got.record,
                got.block_number, got.block_hash, got.timestamp, got.finalized))
        return scan

    def close(self) -> None:
        """Nothing to release: the HTTP provider holds no connection between calls."""
