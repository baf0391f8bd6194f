"""HTTP client for a VeChainThor node's REST API ("Thorest", shared/reference/thor-rest-api.yaml).

Only what anchoring and verification need: genesis and best/finalized blocks (chainTag,
blockRef, finality), sending raw transactions, receipts, transactions by id, account energy and
the suggested priority fee. Transient failures (connection refused/reset, timeouts, HTTP 5xx/429)
are retried with exponential backoff; what remains is raised as one of the exceptions below,
each saying what the operator should do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from anchor import thor

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- errors


class ThorClientError(Exception):
    """Base of everything this client raises."""


class NodeUnreachable(ThorClientError):
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


class TxRejected(ThorClientError):
    """``POST /transactions`` refused the transaction; ``node_message`` is the node's text."""

    def __init__(self, status: int, node_message: str, advice: str) -> None:
        self.status = status
        self.node_message = node_message.strip()
        super().__init__(
            f"Thor node refused the transaction (HTTP {status}): {self.node_message}. {advice}"
        )

    @property
    def known(self) -> bool:
        """The node has this tx in its chain already (sending it again is harmless)."""
        return "known tx" in self.node_message

    @property
    def expired(self) -> bool:
        return self.node_message.endswith("expired")


class BadTransaction(TxRejected):
    """HTTP 400: the node considers the tx malformed (bad signature, chain tag, gas...)."""


class InsufficientEnergy(TxRejected):
    """HTTP 403 with "insufficient energy": the gas payer lacks VTHO."""


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
            id=_field(d, "id", str).lower(),
            parent_id=_field(d, "parentID", str).lower(),
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
            block_id=_field(d, "blockID", str).lower(),
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
            tx_id=_field(meta, "txID", str).lower(),
            tx_origin=_field(meta, "txOrigin", str).lower(),
            tx_type=d.get("type"),
            gas_used=_field(d, "gasUsed", int),
            gas_payer=_field(d, "gasPayer", str).lower(),
            paid=_hex_int(_field(d, "paid", (str, int)), "paid"),
            reward=_hex_int(_field(d, "reward", (str, int)), "reward"),
            reverted=_field(d, "reverted", bool),
            block_id=_field(meta, "blockID", str).lower(),
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


# ----------------------------------------------------------------------------- client

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


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


class ThorClient:
    """Synchronous client for one Thor node.

    ``retries`` extra attempts are made for transient failures, sleeping ``backoff``·2^k seconds
    (capped at ``max_backoff``) between them. ``sleep`` and ``transport`` are injectable so tests
    run without real waiting. Sending a tx again is safe: the id is fixed by its bytes and the
    node treats a copy it already holds as success.
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
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._genesis: Block | None = None

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

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        attempts = self.retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                log.info("retrying %s %s in %.1fs (%s)", method, path, delay, last)
                self._sleep(delay)
            try:
                resp = self._http.request(method, path, params=params, json=json_body)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if resp.status_code in _TRANSIENT_STATUS:
                last = f"HTTP {resp.status_code}"
                if attempt == attempts - 1:
                    raise NodeResponseError(f"{method} {path}", resp.status_code, resp.text)
                continue
            return resp
        raise NodeUnreachable(self.base_url, attempts, last)

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
            raise NodeResponseError(what, None, repr(data))
        try:
            return parse(data)
        except (ValueError, TypeError, KeyError) as e:
            raise NodeResponseError(what, None, f"{e}: {data!r}") from None

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
        """Genesis block (cached: it never changes for a node)."""
        if self._genesis is None:
            self._genesis = self._block_required("0")
        return self._genesis

    def chain_tag(self) -> int:
        """Last byte of the genesis id; every tx carries it so it cannot be replayed elsewhere."""
        return self.genesis().chain_tag

    def best_block(self) -> Block:
        return self._block_required("best")

    def finalized_block(self) -> Block:
        """``GET /blocks/finalized`` (VIP-220): blocks up to this one cannot be reverted."""
        return self._block_required("finalized")

    # ---- transactions

    def send_raw(self, raw: bytes) -> str:
        """``POST /transactions``; returns the tx id. Raises TxRejected subclasses on 400/403."""
        resp = self._request("POST", "/transactions", json_body={"raw": "0x" + raw.hex()})
        if resp.status_code == 200:
            try:
                tx_id = resp.json()["id"]
            except (ValueError, KeyError, TypeError):
                raise NodeResponseError("POST /transactions", 200, resp.text) from None
            return str(tx_id).lower()
        text = resp.text.strip()
        if resp.status_code == 400:
            raise BadTransaction(
                400,
                text,
                "The node considers the tx malformed: check that the node is on the network "
                "this anchorer was set up for (chain tag), and report it if it persists.",
            )
        if resp.status_code == 403:
            if "insufficient energy" in text:
                raise InsufficientEnergy(403, text, self._energy_advice(raw))
            raise TxRejected(
                403,
                text,
                "The node will not take this tx now; the anchorer rebuilds expired txs and "
                "retries the others with backoff.",
            )
        raise NodeResponseError("POST /transactions", resp.status_code, resp.text)

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

    def receipt(self, tx_id: str | bytes) -> Receipt | None:
        """``GET /transactions/{id}/receipt`` on the best chain; None while not included."""
        path = f"/transactions/{_bytes32(tx_id, 'tx id')}/receipt"
        data = self._json("GET", path)
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
            raise NodeResponseError(f"GET {path}?raw=true", None, repr(data))
        meta = data.get("meta")
        try:
            raw = thor.parse_hex(data["raw"], "raw")
            return raw, None if meta is None else TxMeta.from_json(meta)
        except (ValueError, TypeError) as e:
            raise NodeResponseError(f"GET {path}?raw=true", None, f"{e}: {data!r}") from None

    # ---- accounts and fees

    def account(self, address: str | bytes) -> Account:
        path = f"/accounts/{_address(address)}"
        acc: Account = self._parse(f"GET {path}", Account.from_json, self._json("GET", path))
        return acc

    def energy(self, address: str | bytes) -> int:
        """VTHO balance in wei: what a gas payer spends."""
        return self.account(address).energy

    def priority_fee(self) -> int:
        """``GET /fees/priority``: the node's suggested maxPriorityFeePerGas (wei)."""
        data = self._json("GET", "/fees/priority")
        try:
            return _hex_int(data["maxPriorityFeePerGas"], "maxPriorityFeePerGas")
        except (ValueError, KeyError, TypeError):
            raise NodeResponseError("GET /fees/priority", None, repr(data)) from None
