"""Reading an anchor back from any EVM chain through web3.py, as an inspector does: the chain
reader the verifier uses, with the errors the EVM anchorer (:mod:`anchor.evm`) shares. Nothing
here holds a key or a store. :class:`EvmChainReader` is its
:class:`anchor.chain_reader.ChainReader`."""

from __future__ import annotations

import time
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
    Web3Exception,
    Web3RPCError,
    Web3ValueError,
)
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import RPCEndpoint

from anchor.chain_reader import (
    DEFAULT_SCAN_BLOCKS,
    DEFAULT_SCAN_SECONDS,
    MAX_BLOCK_TRANSACTIONS,
    MAX_NODE_ANSWER_BYTES,
    AnchorReadError,
    AnchorScan,
    ChainAnchor,
    ChainMismatchError,
    ChainNodeUnavailable,
    NodeAnswerError,
    NodeTooSlow,
    ScannedBlock,
    walk_blocks,
)
from fieldproof.errors import ChainError
from fieldproof.formats.anchor_record import RECORD_SIZE, AnchorRecord, RecordError

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


class BoundedSession(requests.Session):
    """The reader's HTTP session: every answer at most ``limit`` bytes (a ``Content-Length``
    over it is refused unread), uncompressed (``Accept-Encoding: identity``; a compressed answer
    could inflate past any bound), and read whole within ``seconds`` (requests' timeout bounds
    each read, not a body trickled a byte at a time). Raises :class:`NodeAnswerError` or
    :class:`NodeTooSlow`, which web3 passes through."""

    def __init__(self, limit: int = MAX_NODE_ANSWER_BYTES, seconds: float = 30.0) -> None:
        super().__init__()
        self.limit, self.seconds = limit, seconds
        self.headers["Accept-Encoding"] = "identity"

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        deadline = time.monotonic() + self.seconds
        kwargs["stream"] = True
        verb = method.decode("ascii") if isinstance(method, bytes) else method
        resp = super().request(verb, url, *args, **kwargs)
        where = resp.url.split("?")[0][:200]
        try:
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit:
                raise NodeAnswerError(
                    f"EVM node {where} announces a {int(declared):,}-byte answer, over the "
                    f"{self.limit:,} bytes any block takes: a hostile or broken node")
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise NodeAnswerError(f"EVM node {where} answered {encoding[:40]}-compressed, "
                                      "though asked for an uncompressed answer")
            body = bytearray()
            while chunk := resp.raw.read1(64 * 1024):  # what has arrived, not a full 64 KiB
                body += chunk
                if len(body) > self.limit:
                    raise NodeAnswerError(
                        f"EVM node {where} answered over {self.limit:,} bytes, more than any "
                        "block holds: a hostile or broken node; ask another one")
                if time.monotonic() > deadline:
                    raise NodeTooSlow(f"EVM node {where} took over {self.seconds:g} s to "
                                      "answer one request (it sends slowly): ask another node")
        finally:
            resp.close()
        resp._content = bytes(body)
        resp._content_consumed = True
        return resp


#: seconds one answer may take from request to last byte when the caller names no deadline
#: (the anchorer): requests' timeout bounds each read, not a body trickled a piece at a time
ANSWER_SECONDS = 30.0


def connect(url: str, timeout_s: float = 10.0, session: requests.Session | None = None) -> Web3:
    """A Web3 client for one JSON-RPC URL, without web3's own retries (``step`` retries), and
    tolerant of proof-of-authority chains whose blocks carry long ``extraData``. ``session``:
    the HTTP session it uses; by default a :class:`BoundedSession` allowing each answer
    ``timeout_s`` a read and :data:`ANSWER_SECONDS` (at least ``timeout_s``) in all. web3's
    ``HTTPProvider`` itself reads any answer whole, of any size and compressed (requests
    inflates gzip unbounded), so every client this module makes is bounded here."""
    if session is None:
        session = BoundedSession(seconds=max(ANSWER_SECONDS, timeout_s))
    provider = HTTPProvider(url, request_kwargs={"timeout": timeout_s}, session=session,
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
    if bytes(tx["hash"]) != bytes(h) or bytes(receipt["transactionHash"]) != bytes(h):
        raise AnchorNotFoundError(
            f"EVM node {url} answered another transaction than {hex_hash}: ask another node")
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
        self.w3 = connect(url, timeout_s, BoundedSession(seconds=timeout_s))

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
                     max_blocks: int = DEFAULT_SCAN_BLOCKS,
                     max_seconds: float | None = DEFAULT_SCAN_SECONDS) -> AnchorScan:
        """Every anchor of ``origin`` in a bounded block range: each block is read with its
        transactions (``eth_getBlockByNumber(n, true)``, one request) as raw JSON-RPC, every
        field checked (:meth:`_full_block`), since the node may lie in any of them; a
        transaction whose calldata is this log's record is read back as :meth:`read_anchor`
        does (receipt status, canonical block, finality) and must be in the block that listed
        it. JSON-RPC has no filter on calldata, and an anchor emits no log, so ``eth_getLogs``
        cannot find it."""
        if from_block < 0 or max_blocks < 1:
            raise ValueError("from_block must be >= 0 and max_blocks >= 1")
        started = time.monotonic()
        network = _quantity(self._rpc("eth_chainId", []), "eth_chainId")
        if self.chain_id is not None and network != self.chain_id:
            raise ChainIdMismatchError(
                f"EVM node {self.url} serves chain id {network}, not {self.chain_id}: ask a "
                "node of the chain the anchors name")
        head = _quantity(self._rpc("eth_blockNumber", []), "eth_blockNumber")
        last = head if to_block is None else min(to_block, head)
        scan = AnchorScan("evm", from_block, from_block - 1, head, complete=False)
        if head < from_block:
            scan.stopped = (f"the node's head is block {head}, below block {from_block} where "
                            "the scan starts: it is behind, or hides blocks; ask another node")
            return scan

        def read_block(number: int) -> ScannedBlock:
            block_hash, parent_hash, txs = self._full_block(number, head)
            return ScannedBlock(block_hash, parent_hash, len(txs), [
                tx_hash for tx_hash, data in txs
                if data is not None and _is_record_of(data, origin)])

        candidates = walk_blocks(scan, last, max_blocks, max_seconds, started, read_block)
        self._read_back(candidates, str(network), scan)
        return scan

    def _read_back(self, candidates: dict[str, int], network: str, scan: AnchorScan) -> None:
        """Each candidate read back into ``scan``; one the node cannot or will not give is
        ``unreadable``, and once the node stops answering the rest are too, unasked. web3
        parses the answers here: whatever it raises on a malformed one is that tx's error."""
        down = ""
        for tx_hash, listed_in in candidates.items():
            if down:
                scan.unreadable.append((tx_hash, f"not read back: {down}"))
                continue
            try:
                got = read_anchor(self.w3, tx_hash, confirmations=self.confirmations)
                if got.block_number != listed_in:
                    raise AnchorNotFoundError(f"the node listed it in block {listed_in} but "
                                              f"places it in block {got.block_number}")
            except ChainNodeUnavailable as exc:
                down = f"the node stopped answering ({str(exc)[:200]})"
                scan.unreadable.append((tx_hash, down))
                continue
            except ChainError as exc:
                scan.unreadable.append((tx_hash, str(exc)[:400]))
                continue
            except (Web3Exception, ValueError, TypeError, KeyError, AttributeError) as exc:
                scan.unreadable.append(
                    (tx_hash, f"the node's answer is malformed: {type(exc).__name__}: "
                              f"{str(exc)[:300]}"))
                continue
            scan.anchors.append(ChainAnchor(
                "evm", network, got.tx_hash.lower(), str(got.sender), got.record,
                got.block_number, got.block_hash, got.timestamp, got.finalized))

    def _rpc(self, method: str, params: list[Any]) -> Any:
        """The ``result`` of one raw JSON-RPC call (no web3 formatters: the reader checks
        every field itself), or the error naming the method."""
        try:
            resp = ask_node(self.url, lambda: self.w3.provider.make_request(
                RPCEndpoint(method), params))
        except (ValueError, TypeError) as exc:  # not JSON (web3's decode)
            raise NodeAnswerError(f"EVM node {self.url}: {method} answered no JSON-RPC "
                                  f"response ({str(exc)[:200]})") from None
        if not isinstance(resp, dict):
            raise NodeAnswerError(f"EVM node {self.url}: {method} answered {repr(resp)[:200]}")
        if resp.get("error") is not None:
            raise NodeAnswerError(f"EVM node {self.url}: {method} failed: "
                                  f"{repr(resp['error'])[:300]}")
        return resp.get("result")

    def _full_block(
        self, number: int, head: int
    ) -> tuple[str, str, list[tuple[str, bytes | None]]]:
        """Block ``number`` with its transactions: its hash, its parent's hash and per
        transaction (hash, calldata when it is a record's length), every field checked."""
        what = f"eth_getBlockByNumber({hex(number)}, true)"
        block = self._rpc("eth_getBlockByNumber", [hex(number), True])
        if block is None:
            raise NodeAnswerError(f"{what}: the node has no block {number}, yet said its head "
                                  f"is {head}")
        if not isinstance(block, dict):
            raise NodeAnswerError(f"{what}: the block is not a JSON object: "
                                  f"{repr(block)[:200]}")
        got = _quantity(block.get("number"), f"{what} number")
        if got != number:
            raise NodeAnswerError(f"{what}: the node answered block {got} for block {number}")
        block_hash = _hash32(block.get("hash"), f"{what} hash")
        parent_hash = _hash32(block.get("parentHash"), f"{what} parentHash")
        txs = block.get("transactions")
        if not isinstance(txs, list):
            raise NodeAnswerError(f"{what}: transactions is not a list: {repr(txs)[:200]}")
        if len(txs) > MAX_BLOCK_TRANSACTIONS:
            raise NodeAnswerError(f"{what}: the block lists {len(txs):,} transactions, more "
                                  f"than any block holds ({MAX_BLOCK_TRANSACTIONS:,})")
        out: list[tuple[str, bytes | None]] = []
        for i, tx in enumerate(txs):
            if not isinstance(tx, dict):
                raise NodeAnswerError(f"{what}: transaction {i} is not a JSON object (the node "
                                      "ignored full transactions?)")
            tx_hash = _hash32(tx.get("hash"), f"{what} transaction {i} hash")
            data = _hex_bytes(tx.get("input"), f"{what} transaction {tx_hash} input")
            out.append((tx_hash, data if len(data) == RECORD_SIZE else None))
        return block_hash, parent_hash, out

    def close(self) -> None:
        """Nothing to release: the HTTP provider holds no connection between calls."""


def _quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity (``0x`` hex, at most 64 bits), or NodeAnswerError."""
    if isinstance(value, str) and value[:2] == "0x" and 2 < len(value) <= 18:
        try:
            return int(value[2:], 16)
        except ValueError:
            pass
    raise NodeAnswerError(f"{what} is not a 0x-hex quantity: {repr(value)[:80]}")


def _hash32(value: Any, what: str) -> str:
    raw = _hex_bytes(value, what)
    if len(raw) != 32:
        raise NodeAnswerError(f"{what} is not a 32-byte hash: {repr(value)[:80]}")
    return "0x" + raw.hex()


def _hex_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str) and value[:2] == "0x":
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise NodeAnswerError(f"{what} is not 0x-hex data: {repr(value)[:80]}")


def _is_record_of(data: bytes, origin: str) -> bool:
    try:
        return AnchorRecord.decode(data).matches(origin)
    except RecordError:
        return False
