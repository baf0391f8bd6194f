"""HTTP client for a VeChainThor node's REST API ("Thorest", shared/reference/thor-rest-api.yaml).

Only what anchoring and verification need: genesis and best/finalized blocks (chainTag,
blockRef, finality), sending raw transactions, receipts (also as seen from a given head, e.g.
the finalized block), transactions by id, accounts, clause simulation (``POST /accounts/*``) and
fees (``/fees/history``, ``/fees/priority``). Transient failures (connection refused/reset,
timeouts, HTTP 5xx/429) are retried with exponential backoff; what remains is raised as one of
the exceptions below, each saying what the operator should do.

Every request carries ``x-genesis-id`` once the client knows which network it talks to (given at
construction, by ``expect_genesis``, or learned from ``GET /blocks/0``), and every response's
``x-genesis-id`` header is checked: a node on another network answers ``403 genesis id
mismatch`` (thor's ``api/middleware``), which is :class:`WrongNetwork`, never a refused tx.

A refused ``POST /transactions`` is classified by the node's own text, not by its status code
alone (:func:`classify_refusal`): thor's tx pool prefixes ``bad tx:`` (the tx can never be valid:
400) or ``tx rejected:`` (not acceptable now: 403). ``thor solo --on-demand`` answers the pool's
"bad tx" checks as ``403 tx rejected: resolve transaction: …`` (measured on thor v2.4.4), so
that prefix is a bad tx too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpcore
import httpx
from eth_hash.auto import keccak

from anchor import thor
from anchor.chain_reader import (
    MAX_NODE_ANSWER_BYTES,
    ChainMismatchError,
    ChainNodeUnavailable,
    NodeAnswerError,
    NodeTooSlow,
)
from fieldproof.errors import ChainError

log = logging.getLogger(__name__)

GENESIS_HEADER = "x-genesis-id"

#: the Params built-in contract ("Params" right-aligned in 20 bytes) and its key for the price
#: legacy txs pay per gas before gasPriceCoef (thor/params.go ``KeyLegacyTxBaseGasPrice``)
PARAMS_ADDRESS = b"Params".rjust(20, b"\0")
KEY_LEGACY_TX_BASE_GAS_PRICE = b"base-gas-price".rjust(32, b"\0")
_PARAMS_GET = bytes(keccak(b"get(bytes32)"))[:4]

# ----------------------------------------------------------------------------- errors


class ThorClientError(ChainError):
    """Base of everything this client raises."""


class NodeUnreachable(ThorClientError, ChainNodeUnavailable):
    """No answer from the node (refused, reset, timed out) even after retries."""

    def __init__(self, url: str, attempts: int, detail: str) -> None:
        self.url = url
        self.attempts = attempts
        self.detail = detail
        super().__init__(
            f"Thor node at {url} is unreachable after {attempts} attempt(s) ({detail}): check the "
            "node URL, that the node is running and that this host can reach it. Anchoring keeps "
            "its state and retries by itself."
        )


class NodeResponseError(ThorClientError):
    """The node answered, but not as thor-rest-api.yaml says it should (or with HTTP 5xx)."""

    def __init__(self, what: str, status: int | None, body: str) -> None:
        self.status = status
        self.body = body
        status_text = f"HTTP {status}" if status is not None else "a malformed response"
        if status is not None and status >= 500:
            advice = "The node is failing: check its health and logs, or use another node."
        else:
            advice = (
                "Check that the URL points at a Thor REST API (port 8669 by default) of a "
                "supported version."
            )
        super().__init__(
            f"Thor node gave {status_text} for {what}: {body.strip()[:500]!r}. {advice}"
        )


class NodeAnswerRefused(NodeResponseError, NodeAnswerError):
    """An answer no Thor node sends, refused unread or read no further: over the size bound of
    its kind, or compressed though asked for an uncompressed one. Not retried (the node would
    answer the same); a :class:`NodeResponseError`, so the anchorer pauses and backs off as for
    any node that answers wrongly, and a :class:`NodeAnswerError` for a reader."""

    def __init__(self, url: str, what: str, why: str) -> None:
        self.url = url
        self.status = None
        self.body = ""
        ThorClientError.__init__(
            self,
            f"Thor node at {url} {why} to {what}: a hostile or broken node. Anchoring keeps its "
            "state and asks again later; if it persists, use another node.",
        )


class NodeAnswerTooSlow(NodeUnreachable, NodeTooSlow):
    """The node sent its answer slower than the client's per-answer deadline allows (a node
    trickling bytes, each within the read timeout, would otherwise hold the caller for hours).
    Not retried within the request: the deadline was spent; the anchorer backs off."""

    def __init__(self, url: str, what: str, seconds: float) -> None:
        self.url = url
        self.attempts = 1
        self.detail = f"over {seconds:g} s to answer"
        ThorClientError.__init__(
            self,
            f"Thor node at {url} took over {seconds:g} s to answer {what} (it sends its answer "
            "slowly): check the node and the network between; anchoring keeps its state and "
            "asks again later, or use another node.",
        )


class WrongNetwork(ThorClientError, ChainMismatchError):
    """The node is on another network than the one expected (its genesis id differs).

    ``got`` is the node's genesis id when it said which (the ``x-genesis-id`` response header
    or its block 0), else None."""

    def __init__(self, url: str, expected: str, got: str | None) -> None:
        self.url = url
        self.expected = expected
        self.got = got
        on = f"on the network with genesis {got}" if got else "on another network"
        super().__init__(
            f"Thor node at {url} is {on}, not on genesis {expected}: point this at a node of the "
            "right network (this is not a refused transaction; nothing was sent)."
        )


class TxRejected(ThorClientError):
    """``POST /transactions`` refused the transaction; ``node_message`` is the node's text and
    ``reason`` that text without the pool's ``bad tx:`` / ``tx rejected:`` prefix."""

    def __init__(self, status: int, node_message: str, advice: str) -> None:
        self.status = status
        self.node_message = node_message.strip()
        self.reason = _strip_prefix(self.node_message)
        super().__init__(
            f"Thor node refused the transaction (HTTP {status}): {self.node_message}. {advice}"
        )

    @property
    def known(self) -> bool:
        """The node has this tx in its chain already (sending it again is harmless)."""
        return self.reason == "known tx"

    @property
    def expired(self) -> bool:
        """The next block is past the tx's blockRef + expiration: rebuild it."""
        return self.reason == "expired"


class BadTransaction(TxRejected):
    """The tx can never be valid as built (signature, chain tag, gas below intrinsic, fee
    fields, encoding): ``bad tx:``/``raw:`` from a node's pool, or ``tx rejected: resolve
    transaction:`` from ``thor solo --on-demand``."""


class InsufficientEnergy(TxRejected):
    """``tx rejected: insufficient energy…``: the gas payer lacks VTHO."""


class FeeTooLow(TxRejected):
    """``tx rejected: gas price is less than block base fee``: build again on the current fee."""


_REFUSAL_PREFIXES = ("bad tx:", "tx rejected:")
#: refusals behind ``tx rejected:`` that no retry of the same tx can cure
_PERMANENT = frozenset({"size too large", "unsupported features", "unused reserved slot"})


def _strip_prefix(message: str) -> str:
    for prefix in _REFUSAL_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :].strip()
    return message


def classify_refusal(status: int, text: str, *, energy_advice: str = "") -> ThorClientError:
    """The error for a non-200 answer to ``POST /transactions``, from the node's own words.

    ``bad tx: …`` (thor ``txpool.badTxError``), ``raw: …``/``body: …`` (the API's decoding) and
    ``tx rejected: resolve transaction: …`` (solo on-demand's wording of the same checks) are
    :class:`BadTransaction`; other ``tx rejected: …`` (``txpool.txRejectedError``) are
    :class:`TxRejected`, :class:`InsufficientEnergy` or :class:`FeeTooLow`; ``genesis id
    mismatch`` never gets here (the client raises :class:`WrongNetwork` for it on every
    request); anything else is not the node's tx pool speaking (a proxy, another service) and is
    a :class:`NodeResponseError`.
    """
    message = text.strip()
    if message.startswith(("bad tx:", "raw:", "body")):
        return BadTransaction(
            status,
            message,
            "The node considers the tx malformed or invalid as built: check that the node is on "
            "the network this anchorer was set up for (chain tag), and report it if it persists.",
        )
    if not message.startswith("tx rejected:"):
        return NodeResponseError("POST /transactions", status, text)
    reason = _strip_prefix(message)
    if reason.startswith("resolve transaction:") or reason in _PERMANENT:
        return BadTransaction(
            status,
            message,
            "The node considers the tx invalid as built (signature, gas, fee fields or size); "
            "report it if it persists.",
        )
    if reason.startswith("insufficient energy"):
        return InsufficientEnergy(
            status,
            message,
            energy_advice or "Send VTHO to the gas payer, or configure a VIP-191 sponsor key.",
        )
    if reason == "gas price is less than block base fee":
        return FeeTooLow(
            status,
            message,
            "The base fee rose above what the tx offers; the anchorer builds it again on the "
            "node's current base fee (raise max_fee_per_gas if it was set by hand).",
        )
    return TxRejected(
        status,
        message,
        "The node will not take this tx now; the anchorer rebuilds expired txs and retries the "
        "others with backoff.",
    )


# ----------------------------------------------------------------------------- models


def _hex_int(v: Any, what: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            return int(v, 16) if v[:2].lower() == "0x" else int(v, 10)
        except ValueError:
            pass
    raise ValueError(f"{what} is not a hex or decimal integer: {v!r}")


def _id32(d: Mapping[str, Any], key: str) -> str:
    """A ``0x``-prefixed 32-byte hex id, lower-cased; anything else is refused."""
    v: str = _field(d, key, str)
    if len(v) != 66 or v[:2] != "0x" or len(bytes.fromhex(v[2:])) != 32:
        raise ValueError(f"field {key!r} is not a 32-byte hex id")
    return v.lower()


def _field(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise ValueError(f"missing field {key!r}")
    v = d[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise ValueError(f"field {key!r} has type {type(v).__name__}")
    return v


@dataclass(frozen=True)
class Block:
    """A block header as the API returns it (``transactions`` = tx ids)."""

    number: int
    id: str
    parent_id: str
    timestamp: int
    gas_limit: int
    gas_used: int
    base_fee_per_gas: int | None
    is_trunk: bool
    is_finalized: bool
    transactions: tuple[str, ...]

    @property
    def block_ref(self) -> bytes:
        """First 8 bytes of the block id: what a tx puts in ``blockRef``."""
        return bytes.fromhex(self.id[2:18])

    @property
    def chain_tag(self) -> int:
        """Last byte of the id; meaningful for the genesis block only."""
        return int(self.id[-2:], 16)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Block:
        base_fee = d.get("baseFeePerGas")
        txs = d.get("transactions", [])
        return cls(
            number=_field(d, "number", int),
            id=_id32(d, "id"),
            parent_id=_id32(d, "parentID"),
            timestamp=_field(d, "timestamp", int),
            gas_limit=_field(d, "gasLimit", int),
            gas_used=_field(d, "gasUsed", int),
            base_fee_per_gas=None if base_fee is None else _hex_int(base_fee, "baseFeePerGas"),
            is_trunk=bool(d.get("isTrunk", True)),
            is_finalized=bool(d.get("isFinalized", False)),
            transactions=tuple(t if isinstance(t, str) else str(t.get("id")) for t in txs),
        )


@dataclass(frozen=True)
class TxMeta:
    block_id: str
    block_number: int
    block_timestamp: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TxMeta:
        return cls(
            block_id=_id32(d, "blockID"),
            block_number=_field(d, "blockNumber", int),
            block_timestamp=_field(d, "blockTimestamp", int),
        )


@dataclass(frozen=True)
class Receipt:
    """Outcome of an included tx: who paid, whether it reverted, and in which block."""

    tx_id: str
    tx_origin: str
    tx_type: int | None
    gas_used: int
    gas_payer: str
    paid: int
    reward: int
    reverted: bool
    block_id: str
    block_number: int
    block_timestamp: int
    outputs: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Receipt:
        meta = _field(d, "meta", dict)
        return cls(
            tx_id=_id32(meta, "txID"),
            tx_origin=_field(meta, "txOrigin", str).lower(),
            tx_type=d.get("type"),
            gas_used=_field(d, "gasUsed", int),
            gas_payer=_field(d, "gasPayer", str).lower(),
            paid=_hex_int(_field(d, "paid", (str, int)), "paid"),
            reward=_hex_int(_field(d, "reward", (str, int)), "reward"),
            reverted=_field(d, "reverted", bool),
            block_id=_id32(meta, "blockID"),
            block_number=_field(meta, "blockNumber", int),
            block_timestamp=_field(meta, "blockTimestamp", int),
            outputs=tuple(d.get("outputs") or ()),
        )


@dataclass(frozen=True)
class TxClause:
    to: str | None
    value: int
    data: bytes


@dataclass(frozen=True)
class TxInfo:
    """A transaction as ``GET /transactions/{id}`` describes it; ``meta`` is None while pending."""

    id: str
    tx_type: int
    origin: str
    delegator: str | None
    chain_tag: int
    block_ref: str
    expiration: int
    clauses: tuple[TxClause, ...]
    gas: int
    nonce: int
    depends_on: str | None
    size: int
    meta: TxMeta | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TxInfo:
        clauses = tuple(
            TxClause(
                to=None if c.get("to") is None else str(c["to"]).lower(),
                value=_hex_int(c.get("value", "0x0"), "clause value"),
                data=thor.parse_hex(str(c.get("data", "0x")), "clause data"),
            )
            for c in _field(d, "clauses", list)
        )
        meta = d.get("meta")
        return cls(
            id=_field(d, "id", str).lower(),
            tx_type=int(d.get("type") or 0),
            origin=_field(d, "origin", str).lower(),
            delegator=None if d.get("delegator") is None else str(d["delegator"]).lower(),
            chain_tag=_field(d, "chainTag", int),
            block_ref=_field(d, "blockRef", str).lower(),
            expiration=_field(d, "expiration", int),
            clauses=clauses,
            gas=_field(d, "gas", int),
            nonce=_hex_int(_field(d, "nonce", (str, int)), "nonce"),
            depends_on=d.get("dependsOn"),
            size=_field(d, "size", int),
            meta=None if meta is None else TxMeta.from_json(meta),
        )


@dataclass(frozen=True)
class Account:
    balance: int
    energy: int
    has_code: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Account:
        return cls(
            balance=_hex_int(_field(d, "balance", (str, int)), "balance"),
            energy=_hex_int(_field(d, "energy", (str, int)), "energy"),
            has_code=_field(d, "hasCode", bool),
        )


@dataclass(frozen=True)
class FeeHistory:
    """``GET /fees/history``: base fee and gas used ratio per block, oldest first."""

    oldest_block: str
    base_fee_per_gas: tuple[int, ...]
    gas_used_ratio: tuple[float, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FeeHistory:
        fees = _field(d, "baseFeePerGas", list)
        ratios = _field(d, "gasUsedRatio", list)
        if not all(isinstance(r, int | float) and not isinstance(r, bool) for r in ratios):
            raise ValueError("gasUsedRatio holds a non-number")
        return cls(
            oldest_block=_field(d, "oldestBlock", str).lower(),
            base_fee_per_gas=tuple(_hex_int(f, "baseFeePerGas") for f in fees),
            gas_used_ratio=tuple(float(r) for r in ratios),
        )


@dataclass(frozen=True)
class CallResult:
    """One clause as ``POST /accounts/*`` executed it: ``gas_used`` excludes intrinsic gas."""

    data: bytes
    gas_used: int
    reverted: bool
    vm_error: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CallResult:
        gas_used = _field(d, "gasUsed", int)
        if gas_used < 0:
            raise ValueError("gasUsed is negative")
        return cls(
            data=thor.parse_hex(_field(d, "data", str), "data"),
            gas_used=gas_used,
            reverted=_field(d, "reverted", bool),
            vm_error=str(d.get("vmError") or ""),
        )


@dataclass(frozen=True)
class Simulation:
    """What ``POST /accounts/*`` ran of ``clause_count`` clauses, in order: ``results[i]`` is
    clause ``i``. thor stops at the first clause that fails in the VM, so when ``results`` is
    shorter than the clauses sent, its last result reverted and the clauses after it (``not_run``)
    were never executed: they have no result, not a successful one."""

    results: tuple[CallResult, ...]
    clause_count: int

    @property
    def reverted_at(self) -> int | None:
        """Index of the clause that reverted (and stopped the run), or None if none did."""
        if self.results and self.results[-1].reverted:
            return len(self.results) - 1
        return None

    @property
    def not_run(self) -> range:
        """Indexes of the clauses thor skipped after the reverted one (empty if all ran)."""
        return range(len(self.results), self.clause_count)


# ----------------------------------------------------------------------------- client

#: the largest answer of the kinds that can be as large as a block: an expanded block (every
#: transaction with its clauses; see :data:`~anchor.chain_reader.MAX_NODE_ANSWER_BYTES`) and a
#: receipt (its events' data is bounded by the block's gas alone, 8 gas a byte)
MAX_BLOCK_ANSWER_BYTES = MAX_NODE_ANSWER_BYTES
#: the largest of every other answer: a block header (≤ ~1,900 tx ids in 40 M gas, ~130 KB), a
#: transaction (thor's pool takes at most 64 KiB, ~130 KB as hex), an account, a fee history of
#: the few blocks asked, a simulation of our own clauses, a tx pool's answer to a send
MAX_ANSWER_BYTES = 1024 * 1024
#: seconds one answer may take, from sending the request to its last byte, unless told
#: otherwise: httpx's timeout bounds each read, not a body trickled a piece at a time
ANSWER_SECONDS = 30.0

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
#: answers of a node that lacks an optional endpoint or parameter (older versions)
_UNSUPPORTED_STATUS = frozenset({400, 404, 405})


def _address(addr: str | bytes) -> str:
    b = addr if isinstance(addr, bytes) else thor.parse_hex(addr, "address")
    if len(b) != 20:
        raise ValueError(f"address must be 20 bytes, got {len(b)}")
    return "0x" + b.hex()


def _bytes32(value: str | bytes, what: str) -> str:
    b = value if isinstance(value, bytes) else thor.parse_hex(value, what)
    if len(b) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(b)}")
    return "0x" + b.hex()


def _http_date(value: str | None) -> float | None:
    """Seconds since the epoch from an HTTP ``Date`` header; None if absent or unreadable."""
    if not value or len(value) > 64:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _Deadline(threading.local):
    """The monotonic time by which the answer being read must be whole (None: no answer)."""

    at: float | None = None


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, each connect, read and write given no more than what is left of
    the answer's deadline. httpx's timeout restarts with every read, so without this a node
    trickling its status line and headers (httpcore takes up to 100 KiB of them) a byte per
    timeout would hold one request for days before :meth:`ThorClient._receive` sees a byte of
    the body."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self.deadline = _Deadline()

    def left(self, timeout: float | None) -> float | None:
        at = self.deadline.at
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the answer's deadline has passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(
            host, port, self.left(timeout), local_address, socket_options), self)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.connect_unix_socket(path, self.left(timeout), socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._inner, self._backend = inner, backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(
            ssl_context, server_hostname, self._backend.left(timeout)), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _deadline_transport() -> tuple[httpx.BaseTransport, _DeadlineBackend | None]:
    """httpx's own transport over :class:`_DeadlineBackend`. httpx has no public way to name
    httpcore's network backend, so it is set on the transport's pool; should a future httpx
    lay it out otherwise, the transport stays httpx's and only the body is held to the
    deadline (tests/anchor/test_thor_client_hostile.py notices)."""
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
            getattr(pool, "_network_backend", None), httpcore.SyncBackend):
        return transport, None
    backend = _DeadlineBackend()
    pool._network_backend = backend
    return transport, backend


class ThorClient:
    """Synchronous client for one Thor node.

    ``retries`` extra attempts are made for transient failures, sleeping ``backoff``·2^k seconds
    (capped at ``max_backoff``) between them. ``sleep`` and ``transport`` are injectable so tests
    run without real waiting. Sending a tx again is safe: the id is fixed by its bytes and the
    node treats a copy it already holds as success. ``genesis_id``: the network this client must
    talk to (else learned from the first ``genesis()``). ``last_node_time`` is the node's clock
    (its HTTP ``Date``) at the last answer, or None.

    Every answer is network input, read whole only within bounds (:meth:`_receive`): at most
    :data:`MAX_ANSWER_BYTES` (:data:`MAX_BLOCK_ANSWER_BYTES` for an expanded block or a
    receipt), uncompressed, and within ``answer_s`` seconds from request to last byte; else
    :class:`NodeAnswerRefused` or :class:`NodeAnswerTooSlow`, neither retried.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        genesis_id: str | None = None,
        answer_s: float = ANSWER_SECONDS,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if not answer_s > 0:
            raise ValueError("answer_s must be > 0")
        self.answer_s = answer_s
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._backend: _DeadlineBackend | None = None
        if transport is None:
            transport, self._backend = _deadline_transport()
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            # compressed, a small answer could inflate past any bound: a node is asked for an
            # uncompressed one and refused if it compresses anyway (thor v2.4.4 gzips when the
            # client accepts gzip, as httpx does by default, and not when asked for identity)
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
        )
        self._genesis: Block | None = None
        self._expected_genesis: str | None = None
        self.last_node_time: float | None = None
        if genesis_id is not None:
            self.expect_genesis(genesis_id)

    # ---- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ThorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def expected_genesis(self) -> str | None:
        """The genesis id sent as ``x-genesis-id`` on every request (None until known)."""
        return self._expected_genesis

    def expect_genesis(self, genesis_id: str) -> None:
        """Talk only to the network with this genesis id from now on."""
        gid = _bytes32(genesis_id, "genesis id")
        if self._expected_genesis is not None and self._expected_genesis != gid:
            raise WrongNetwork(self.base_url, gid, self._expected_genesis)
        self._expected_genesis = gid

    def _check_network(self, resp: httpx.Response) -> None:
        expected = self._expected_genesis
        got = resp.headers.get(GENESIS_HEADER)
        got = got.strip().lower() if isinstance(got, str) and len(got) <= 80 else None
        if resp.status_code == 403 and resp.text.strip() == "genesis id mismatch":
            raise WrongNetwork(self.base_url, expected or "the expected genesis", got)
        if expected is not None and got is not None and got != expected:
            raise WrongNetwork(self.base_url, expected, got)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        limit: int = MAX_ANSWER_BYTES,
    ) -> httpx.Response:
        attempts = self.retries + 1
        last = ""
        headers = {GENESIS_HEADER: self._expected_genesis} if self._expected_genesis else None
        for attempt in range(attempts):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                log.info("retrying %s %s in %.1fs (%s)", method, path, delay, last)
                self._sleep(delay)
            request = self._http.build_request(
                method, path, params=params, json=json_body, headers=headers
            )
            try:
                resp = self._receive(request, f"{method} {path}", limit)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            self._check_network(resp)
            self.last_node_time = _http_date(resp.headers.get("date"))
            if resp.status_code in _TRANSIENT_STATUS:
                last = f"HTTP {resp.status_code}"
                if attempt == attempts - 1:
                    raise NodeResponseError(f"{method} {path}", resp.status_code, resp.text)
                continue
            return resp
        raise NodeUnreachable(self.base_url, attempts, last)

    def _receive(self, request: httpx.Request, what: str, limit: int) -> httpx.Response:
        """One answer read whole, or refused: a ``Content-Length`` over ``limit`` or a
        compressed body before a byte of it is read, a body growing past ``limit`` as soon as
        it does, an answer still arriving ``answer_s`` after the request was sent. The deadline
        bounds every socket operation of the request (:class:`_DeadlineBackend`: connect,
        status line, headers, body) and is checked as each piece of the body arrives, so one
        answer takes at most ``answer_s`` (plus one read timeout with an injected
        ``transport``)."""
        deadline = time.monotonic() + self.answer_s
        if self._backend is not None:
            self._backend.deadline.at = deadline
        try:
            return self._receive_by(request, what, limit, deadline)
        except httpx.TimeoutException:
            if time.monotonic() < deadline - 0.05:  # a socket timed out at the deadline
                raise  # httpx's own timeout: retried as any transport error
            raise NodeAnswerTooSlow(self.base_url, what, self.answer_s) from None
        finally:
            if self._backend is not None:
                self._backend.deadline.at = None

    def _receive_by(self, request: httpx.Request, what: str, limit: int,
                    deadline: float) -> httpx.Response:
        resp = self._http.send(request, stream=True)
        try:
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise NodeAnswerRefused(
                    self.base_url, what, f"announces a {int(declared):,}-byte answer, over the "
                    f"{limit:,} bytes such an answer can take,")
            encoding = resp.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise NodeAnswerRefused(
                    self.base_url, what, f"answered {encoding[:40]!r}-compressed, though asked "
                    "for an uncompressed answer,")
            body = bytearray()
            # a transport handing over a whole answer in memory (httpx.MockTransport) has read it
            pieces = [resp.content] if resp.is_stream_consumed else resp.iter_raw()
            for chunk in pieces:
                body += chunk
                if len(body) > limit:
                    raise NodeAnswerRefused(
                        self.base_url, what, f"answered over {limit:,} bytes, more than such "
                        "an answer can take,")
                if time.monotonic() > deadline:
                    raise NodeAnswerTooSlow(self.base_url, what, self.answer_s)
            if time.monotonic() > deadline:
                raise NodeAnswerTooSlow(self.base_url, what, self.answer_s)
        finally:
            resp.close()
        return httpx.Response(resp.status_code, headers=resp.headers, content=bytes(body),
                              request=request, extensions=resp.extensions)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, path, **kw)
        if resp.status_code != 200:
            raise NodeResponseError(f"{method} {path}", resp.status_code, resp.text)
        try:
            return resp.json()
        except ValueError:
            raise NodeResponseError(f"{method} {path}", None, resp.text) from None

    @staticmethod
    def _parse(what: str, parse: Callable[[Mapping[str, Any]], Any], data: Any) -> Any:
        if not isinstance(data, dict):
            raise NodeResponseError(what, None, repr(data)[:500])
        try:
            return parse(data)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise NodeResponseError(what, None, f"{e}: {data!r}"[:500]) from None

    # ---- blocks

    def block(self, revision: int | str) -> Block | None:
        """``GET /blocks/{revision}``: a number, an id, ``best``, ``justified`` or ``finalized``."""
        path = f"/blocks/{revision}"
        data = self._json("GET", path)
        if data is None:
            return None
        blk: Block = self._parse(f"GET {path}", Block.from_json, data)
        return blk

    def _block_required(self, revision: str) -> Block:
        blk = self.block(revision)
        if blk is None:
            raise NodeResponseError(f"GET /blocks/{revision}", 200, "null")
        return blk

    def genesis(self) -> Block:
        """Genesis block (cached: it never changes for a node). Its id becomes the expected
        network; a node whose block 0 is another is :class:`WrongNetwork`."""
        if self._genesis is None:
            blk = self._block_required("0")
            if blk.number != 0:
                raise NodeResponseError("GET /blocks/0", 200, f"block number {blk.number}")
            if self._expected_genesis is not None and blk.id != self._expected_genesis:
                raise WrongNetwork(self.base_url, self._expected_genesis, blk.id)
            self._expected_genesis = blk.id
            self._genesis = blk
        return self._genesis

    def chain_tag(self) -> int:
        """Last byte of the genesis id; every tx carries it so it cannot be replayed elsewhere."""
        return self.genesis().chain_tag

    def best_block(self) -> Block:
        return self._block_required("best")

    def best_block_and_node_time(self) -> tuple[Block, float | None]:
        """The best block and the node's clock when it answered (HTTP ``Date``; None if absent):
        how old the node itself thinks its head is."""
        best = self.best_block()
        return best, self.last_node_time

    def finalized_block(self) -> Block:
        """``GET /blocks/finalized`` (VIP-220): blocks up to this one cannot be reverted."""
        return self._block_required("finalized")

    # ---- transactions

    def send_raw(self, raw: bytes) -> str:
        """``POST /transactions``; returns the tx id. A refusal raises what
        :func:`classify_refusal` makes of the node's text."""
        resp = self._request("POST", "/transactions", json_body={"raw": "0x" + raw.hex()})
        if resp.status_code == 200:
            try:
                tx_id = resp.json()["id"]
            except (ValueError, KeyError, TypeError):
                raise NodeResponseError("POST /transactions", 200, resp.text) from None
            if not isinstance(tx_id, str):
                raise NodeResponseError("POST /transactions", 200, resp.text)
            return tx_id.lower()
        text = resp.text[:2000]
        advice = self._energy_advice(raw) if "insufficient energy" in text else ""
        raise classify_refusal(resp.status_code, text, energy_advice=advice)

    @staticmethod
    def _energy_advice(raw: bytes) -> str:
        try:
            tx = thor.decode(raw)
            delegator = tx.delegator()
            payer = delegator if delegator is not None else tx.origin()
            who = ("sponsor (VIP-191 gas payer) " if delegator else "sender ") + "0x" + payer.hex()
        except thor.ThorTxError:
            who = "gas payer"
        return f"Send VTHO to the {who}, or configure a VIP-191 sponsor key that holds VTHO."

    def receipt(self, tx_id: str | bytes, *, head: str | bytes | None = None) -> Receipt | None:
        """``GET /transactions/{id}/receipt``: None while not included. With ``head`` (a block
        id) the chain is read as ending at that block, so ``head=<finalized id>`` answers
        "included at or below the finalized block" in one consistent read."""
        path = f"/transactions/{_bytes32(tx_id, 'tx id')}/receipt"
        params = None if head is None else {"head": _bytes32(head, "head")}
        data = self._json("GET", path, params=params, limit=MAX_BLOCK_ANSWER_BYTES)
        if data is None:
            return None
        rcpt: Receipt = self._parse(f"GET {path}", Receipt.from_json, data)
        return rcpt

    def transaction(self, tx_id: str | bytes, *, pending: bool = False) -> TxInfo | None:
        """``GET /transactions/{id}``; with ``pending`` also finds txs still in the pool."""
        path = f"/transactions/{_bytes32(tx_id, 'tx id')}"
        params = {"pending": "true"} if pending else None
        data = self._json("GET", path, params=params)
        if data is None:
            return None
        info: TxInfo = self._parse(f"GET {path}", TxInfo.from_json, data)
        return info

    def raw_transaction(
        self, tx_id: str | bytes, *, pending: bool = False
    ) -> tuple[bytes, TxMeta | None] | None:
        """The tx's own bytes (``?raw=true``), so a verifier can decode and check them itself."""
        path = f"/transactions/{_bytes32(tx_id, 'tx id')}"
        params = {"raw": "true", **({"pending": "true"} if pending else {})}
        data = self._json("GET", path, params=params)
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("raw"), str):
            raise NodeResponseError(f"GET {path}?raw=true", None, repr(data)[:500])
        meta = data.get("meta")
        try:
            raw = thor.parse_hex(data["raw"], "raw")
            return raw, None if meta is None else TxMeta.from_json(meta)
        except (ValueError, TypeError, AttributeError) as e:
            raise NodeResponseError(f"GET {path}?raw=true", None, f"{e}: {data!r}"[:500]) from None

    # ---- accounts, simulation and fees

    def account(self, address: str | bytes) -> Account:
        path = f"/accounts/{_address(address)}"
        acc: Account = self._parse(f"GET {path}", Account.from_json, self._json("GET", path))
        return acc

    def energy(self, address: str | bytes) -> int:
        """VTHO balance in wei: what a gas payer spends."""
        return self.account(address).energy

    def inspect_clauses(
        self,
        clauses: Sequence[thor.Clause],
        *,
        caller: bytes | None = None,
        gas_payer: bytes | None = None,
        gas: int | None = None,
        revision: str = "next",
    ) -> Simulation:
        """``POST /accounts/*?revision=next``: execute clauses without sending a tx
        (``gas_used`` excludes the intrinsic gas).

        thor runs the clauses in order and returns at the first one whose VM error is set,
        after appending its result (github.com/vechain/thor v2.4.4 = 05d8c16c,
        ``api/accounts/accounts.go:359`` in ``batchCall``: ``if out.VMErr != nil { return
        results, nil }``; the same since v1.3.0): one result per
        clause run, the last one reverted if the run stopped early. Any other shape (more
        results than clauses, fewer without a final revert, a revert before the last result) is
        not thor's and raises :class:`NodeResponseError`."""
        body: dict[str, Any] = {
            "clauses": [
                {
                    "to": None if c.to is None else "0x" + c.to.hex(),
                    "value": hex(c.value),
                    "data": "0x" + c.data.hex(),
                }
                for c in clauses
            ]
        }
        if caller is not None:
            body["caller"] = _address(caller)
        if gas_payer is not None:
            body["gasPayer"] = _address(gas_payer)
        if gas is not None:
            body["gas"] = gas
        what = "POST /accounts/*"
        data = self._json("POST", "/accounts/*", params={"revision": revision}, json_body=body)
        if not isinstance(data, list) or len(data) > len(clauses):
            raise NodeResponseError(
                f"{what} (not a list of at most {len(clauses)} results)", None, repr(data)[:500]
            )
        results = tuple(self._parse(what, CallResult.from_json, d) for d in data)
        early_revert = any(r.reverted for r in results[:-1])
        stopped_without_revert = len(results) < len(clauses) and (
            not results or not results[-1].reverted
        )
        if early_revert or stopped_without_revert:
            raise NodeResponseError(
                f"{what} ({len(results)} result(s) for {len(clauses)} clause(s), but thor "
                "answers one per clause run and stops only after a reverted one)",
                None,
                repr(data)[:500],
            )
        return Simulation(results, len(clauses))

    def legacy_base_gas_price(self) -> int:
        """What a legacy tx pays per gas at gasPriceCoef 0 (``Params.get("base-gas-price")``);
        it pays ``base + base·coef/255``."""
        clause = thor.Clause(PARAMS_ADDRESS, 0, _PARAMS_GET + KEY_LEGACY_TX_BASE_GAS_PRICE)
        (result,) = self.inspect_clauses([clause]).results
        if result.reverted or len(result.data) != 32:
            raise NodeResponseError(
                "Params.get(base-gas-price)", None, f"{result.vm_error or result.data.hex()}"
            )
        return int.from_bytes(result.data, "big")

    def fee_history(self, block_count: int, newest: int | str = "best") -> FeeHistory:
        """``GET /fees/history``: base fees of ``block_count`` blocks up to ``newest`` (a number,
        an id, ``best``, ``finalized`` or ``next``)."""
        if not 0 < block_count < 2**32:
            raise ValueError("block_count must be 1..2^32-1")
        params = {"blockCount": str(block_count), "newestBlock": str(newest)}
        data = self._json("GET", "/fees/history", params=params)
        hist: FeeHistory = self._parse("GET /fees/history", FeeHistory.from_json, data)
        if len(hist.base_fee_per_gas) != len(hist.gas_used_ratio) or not hist.base_fee_per_gas:
            raise NodeResponseError("GET /fees/history", None, repr(data)[:500])
        return hist

    def next_base_fee(self) -> int | None:
        """The base fee the next block will charge, which a tx posted now must cover
        (``/fees/history?blockCount=1&newestBlock=next``). None before GALACTICA (the node
        reports 0x0) or from a node without that endpoint."""
        try:
            fee = self.fee_history(1, "next").base_fee_per_gas[-1]
        except NodeResponseError as e:
            if e.status in _UNSUPPORTED_STATUS:
                return None
            raise
        return fee or None

    def priority_fee(self) -> int:
        """``GET /fees/priority``: the node's suggested maxPriorityFeePerGas (wei)."""
        data = self._json("GET", "/fees/priority")
        try:
            return _hex_int(data["maxPriorityFeePerGas"], "maxPriorityFeePerGas")
        except (ValueError, KeyError, TypeError):
            raise NodeResponseError("GET /fees/priority", None, repr(data)[:500]) from None
