"""ThorClient where the real node cannot go: the Thor node double (tests/support/thornode.py),
and the refusal classifier on the exact texts thor v2.4.4 answers (no node at all).

Every ordinary path (blocks, sending, receipts, lookups, fees, simulation, solo's refusals, a
node of another network) runs on a real thor solo node in
tests/integration/test_thor_client_real.py and test_thor_real.py. Here the double covers
outages, 5xx, a production tx pool's wording (``400 bad tx: …``, low-S), a node whose clock is
ahead, recorded request headers, and hostile answers; each test's docstring says which.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import httpx
import pytest

from anchor import thor
from anchor.thor_client import (
    BadTransaction,
    FeeTooLow,
    InsufficientEnergy,
    NodeResponseError,
    NodeUnreachable,
    ThorClient,
    ThorClientError,
    TxRejected,
    WrongNetwork,
    classify_refusal,
)
from tests.support.thor_txs import TO, build_tx
from tests.support.thornode import ThorNode, funded

ORIGIN_KEY = thor.SecretKey(
    bytes.fromhex("7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a")
)
SPONSOR_KEY = thor.SecretKey(
    bytes.fromhex("321d6443bc6177273b5abf54210fe806d451d6b7973bccc2384ef78bbcd0bf51")
)


@pytest.fixture
def node(shared_dir: Path) -> Iterator[ThorNode]:
    assert (shared_dir / "reference" / "thor-rest-api.yaml").is_file()
    with ThorNode(finality_depth=3, energy=funded(ORIGIN_KEY.address, SPONSOR_KEY.address)) as n:
        yield n


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(node: ThorNode, sleeps: Sleeps) -> Iterator[ThorClient]:
    with ThorClient(node.url, retries=2, backoff=0.5, sleep=sleeps) as c:
        yield c


#: every tx of this module: a fixed nonce and the double's base fee (10^13 wei a gas)
build = partial(build_tx, key=ORIGIN_KEY, nonce=7, base_fee=10**13)


# ---------------------------------------------------------------------------- blocks


# ---------------------------------------------------------------------------- sending


# ---------------------------------------------------------------------------- rejections


def test_malformed_raw_is_400(client: ThorClient) -> None:
    """Double: a production pool's ``400`` for undecodable raw bytes (the words thor solo
    answers are in tests/integration/test_thor_real.py)."""
    raw = build(client).encode()
    with pytest.raises(BadTransaction, match="raw: "):
        client.send_raw(raw[:-3])


def test_bad_signatures_are_400(client: ThorClient) -> None:
    """Double: a production pool's ``400 bad tx: …`` wording and its low-S check (thor solo
    accepts a high-S signature and answers ``403 tx rejected: resolve transaction: …``:
    tests/integration/test_thor_real.py)."""
    tx = build(client)
    s = int.from_bytes(tx.signature[32:64], "big")
    high_s = (
        tx.signature[:32]
        + (thor.SECP256K1_N - s).to_bytes(32, "big")
        + bytes([tx.signature[64] ^ 1])
    )
    with pytest.raises(BadTransaction, match="S value is out of range"):
        client.send_raw(tx.with_signature(high_s).encode())
    with pytest.raises(BadTransaction, match="bad tx: invalid signature recovery id"):
        client.send_raw(tx.with_signature(tx.signature[:64] + b"\x07").encode())
    with pytest.raises(BadTransaction, match="bad tx: invalid signature length"):
        client.send_raw(tx.with_signature(tx.signature[:64]).encode())
    with pytest.raises(BadTransaction, match="bad tx: recovery failed"):
        client.send_raw(tx.with_signature(b"\x00" * 65).encode())
    unsigned = replace(tx, signature=b"")
    with pytest.raises(BadTransaction, match="invalid signature length"):
        client.send_raw(unsigned.encode())


def test_too_little_gas_is_400(client: ThorClient) -> None:
    """Double: a production pool's ``400 bad tx:`` wording for too little gas."""
    tx = build(client, gas=21000)
    with pytest.raises(BadTransaction, match="intrinsic gas exceeds provided gas"):
        client.send_raw(tx.encode())


# ---------------------------------------------------------------------------- faults


def test_node_down_is_a_clear_error(client: ThorClient, node: ThorNode, sleeps: Sleeps) -> None:
    """Double: a node that refuses connections, then comes back."""
    node.go_down()
    with pytest.raises(NodeUnreachable) as exc:
        client.best_block()
    msg = str(exc.value)
    assert node.url in msg
    assert "3 attempt" in msg
    assert "running" in msg
    assert exc.value.attempts == 3
    assert sleeps.calls == [0.5, 1.0]
    node.come_up()
    assert client.best_block().number == 0


def test_node_down_while_sending(client: ThorClient, node: ThorNode) -> None:
    """Double: a node that refuses connections while a tx is being sent."""
    raw = build(client).encode()
    node.go_down()
    with pytest.raises(NodeUnreachable):
        client.send_raw(raw)
    node.come_up()
    assert client.send_raw(raw) == thor.decode(raw).id_hex()


def test_transient_5xx_is_retried(client: ThorClient, node: ThorNode, sleeps: Sleeps) -> None:
    """Double: HTTP 503s on command (thor does not answer 5xx on demand)."""
    node.fail_next(2)
    assert client.best_block().number == 0
    assert sleeps.calls == [0.5, 1.0]


def test_persistent_5xx_is_a_response_error(client: ThorClient, node: ThorNode) -> None:
    """Double: HTTP 503s on command (thor does not answer 5xx on demand)."""
    node.fail_next(3)
    with pytest.raises(NodeResponseError) as exc:
        client.best_block()
    assert exc.value.status == 503


def test_backoff_is_capped(node: ThorNode) -> None:
    """Double: an unreachable node, for the client's capped backoff."""
    sleeps = Sleeps()
    node.go_down()
    with (
        ThorClient(node.url, retries=5, backoff=1.0, max_backoff=3.0, sleep=sleeps) as c,
        pytest.raises(NodeUnreachable),
    ):
        c.genesis()
    assert sleeps.calls == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_bad_tx_id_is_refused_locally() -> None:
    """No node: the client refuses a malformed id before it sends anything."""
    with (
        ThorClient("http://127.0.0.1:9", retries=0) as client,
        pytest.raises(ValueError, match="32 bytes"),
    ):
        client.receipt("0x1234")


# ------------------------------------------------------------------- the double's wire contract


def test_double_speaks_the_rest_contract(node: ThorNode) -> None:
    """Double: the double's own wire contract (its answers must keep matching thor's)."""
    with httpx.Client(base_url=node.url) as h:
        r = h.post("/transactions", json={"raw": "0x00", "extra": 1})
        assert r.status_code == 400
        assert r.text == 'body: json: unknown field "extra"\n'
        assert r.headers["content-type"].startswith("text/plain")
        r = h.post("/transactions", json={"raw": "00"})
        assert r.status_code == 400
        assert r.text == "raw: hex string without 0x prefix\n"
        r = h.get("/blocks/abc")
        assert r.status_code == 400
        assert r.text.startswith("revision: ")
        r = h.get("/blocks/12345")
        assert r.status_code == 200
        assert r.json() is None
        r = h.get("/blocks/best", params={"expanded": "yes"})
        assert r.status_code == 400
        assert r.text == "expanded: should be boolean\n"
        r = h.get("/transactions/0x12/receipt")
        assert r.status_code == 400
        assert r.text == "id: invalid length\n"
        r = h.get("/accounts/0x12")
        assert r.status_code == 400
        assert r.text == "address: invalid length\n"
        r = h.get("/nope")
        assert r.status_code == 404
        best = h.get("/blocks/best").json()
        assert set(best) >= {
            "number",
            "id",
            "size",
            "parentID",
            "timestamp",
            "gasLimit",
            "beneficiary",
            "gasUsed",
            "totalScore",
            "txsRoot",
            "txsFeatures",
            "stateRoot",
            "receiptsRoot",
            "com",
            "signer",
            "isTrunk",
            "isFinalized",
            "transactions",
        }


def test_double_expanded_block_embeds_receipts(client: ThorClient, node: ThorNode) -> None:
    """Double: the double's own expanded block, as thor's ``?expanded=true`` shapes it."""
    tx = build(client)
    client.send_raw(tx.encode())
    node.mine()
    with httpx.Client(base_url=node.url) as h:
        blk = h.get("/blocks/1", params={"expanded": "true"}).json()
    (t,) = blk["transactions"]
    assert t["id"] == tx.id_hex()
    assert t["gasPayer"] == ORIGIN_KEY.address_hex
    assert t["reverted"] is False
    assert t["outputs"][0]["events"] == []


# ------------------------------------------------------------------- refusals by the node's words

# (status, text) exactly as thor v2.4.4 answers them: the production tx pool (txpool/) and
# thor solo --on-demand (cmd/thor/solo/txpool.go), the latter measured on the real node
REFUSALS: list[tuple[int, str, type[ThorClientError], str]] = [
    (400, "bad tx: chain tag mismatch", BadTransaction, ""),
    (400, "bad tx: invalid signature: S value is out of range", BadTransaction, ""),
    (400, "bad tx: intrinsic gas exceeds provided gas", BadTransaction, ""),
    (400, "raw: transaction type not supported", BadTransaction, ""),
    (400, 'body: json: unknown field "x"', BadTransaction, ""),
    (
        403,
        "tx rejected: resolve transaction: intrinsic gas exceeds provided gas",
        BadTransaction,
        "",
    ),
    (403, "tx rejected: resolve transaction: invalid signature length", BadTransaction, ""),
    (403, "tx rejected: resolve transaction: invalid signature recovery id", BadTransaction, ""),
    (
        403,
        "tx rejected: resolve transaction: maxFeePerGas is less than maxPriorityFeePerGas",
        BadTransaction,
        "",
    ),
    (403, "tx rejected: size too large", BadTransaction, ""),
    (403, "tx rejected: unsupported features", BadTransaction, ""),
    (403, "tx rejected: insufficient energy", InsufficientEnergy, ""),
    (403, "tx rejected: insufficient energy for overall pending cost", InsufficientEnergy, ""),
    (403, "tx rejected: gas price is less than block base fee", FeeTooLow, ""),
    (403, "tx rejected: expired", TxRejected, "expired"),
    (403, "tx rejected: known tx", TxRejected, "known"),
    (403, "tx rejected: block ref out of schedule", TxRejected, ""),
    (403, "tx rejected: pool is full", TxRejected, ""),
    (403, "Forbidden", NodeResponseError, ""),  # a proxy, not the node's tx pool
    (400, "<html>bad request</html>", NodeResponseError, ""),
]


@pytest.mark.parametrize(("status", "text", "kind", "flag"), REFUSALS)
def test_refusals_are_classified_by_the_nodes_words(
    status: int, text: str, kind: type[ThorClientError], flag: str
) -> None:
    err = classify_refusal(status, text + "\n")
    assert type(err) is kind
    if isinstance(err, TxRejected):
        assert err.node_message == text and err.status == status
        assert err.known == (flag == "known")
        assert err.expired == (flag == "expired")
        assert not err.reason.startswith(("bad tx:", "tx rejected:"))


# ---------------------------------------------------------------------------- the network


def test_every_request_names_the_network_once_known(client: ThorClient, node: ThorNode) -> None:
    """Double: it records the ``x-genesis-id`` request header of every request; a real node
    only answers (its 403 for another genesis: tests/integration/test_thor_client_real.py)."""
    assert client.expected_genesis is None
    client.best_block()
    assert node.genesis_headers == [None]  # not known yet: nothing to send
    client.genesis()
    client.best_block()
    client.send_raw(build(client).encode())
    assert node.genesis_headers[-3:] == [node.genesis_id] * 3
    assert client.expected_genesis == node.genesis_id


def test_answer_from_another_network_is_refused_even_without_the_403() -> None:
    """A node (or a proxy in front of another one) that ignores the request header but says
    which network answered."""
    ours, theirs = "0x" + "aa" * 32, "0x" + "bb" * 32

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-genesis-id"] == ours
        return httpx.Response(200, json=None, headers={"x-genesis-id": theirs})

    with (
        ThorClient(
            "http://node", retries=0, transport=httpx.MockTransport(handler), genesis_id=ours
        ) as c,
        pytest.raises(WrongNetwork) as exc,
    ):
        c.block(5)
    assert exc.value.got == theirs


def test_genesis_block_of_another_network_is_wrong_network(node: ThorNode) -> None:
    """Double: a relay that strips the node's headers; the double serves the block 0 it relays."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = httpx.get(node.url + request.url.raw_path.decode()).json()  # the double's block 0
        return httpx.Response(200, json=body)  # relayed without the node's headers

    with (
        ThorClient(
            "http://relay",
            retries=0,
            transport=httpx.MockTransport(handler),
            genesis_id="0x" + "cc" * 32,
        ) as c,
        pytest.raises(WrongNetwork),
    ):
        c.genesis()


def test_node_time_comes_from_its_date_header(client: ThorClient, node: ThorNode) -> None:
    """Double: a node whose clock is 75 s ahead of its best block (a real node's Date is
    the host's clock: tests/integration/test_thor_client_real.py)."""
    node.mine(3)
    node.lag_s = 75
    best, node_time = client.best_block_and_node_time()
    assert best.number == 3
    assert node_time == int(node.node_time) == best.timestamp + 75


# ---------------------------------------------------------------------------- fees, simulation


def test_next_base_fee_is_none_before_galactica_or_without_the_endpoint() -> None:
    def zero(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={"oldestBlock": "0x" + "00" * 32, "baseFeePerGas": ["0x0"], "gasUsedRatio": [0]},
        )

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404 page not found\n")

    for handler in (zero, missing):
        with ThorClient("http://n", retries=0, transport=httpx.MockTransport(handler)) as c:
            assert c.next_base_fee() is None


@pytest.mark.parametrize(
    "answer",
    [
        {
            "number": 1,
            "id": "0x12",
            "parentID": "0x" + "00" * 32,
            "timestamp": 1,
            "gasLimit": 1,
            "gasUsed": 0,
        },
        {
            "number": 1,
            "id": "0x" + "zz" * 32,
            "parentID": "0x" + "00" * 32,
            "timestamp": 1,
            "gasLimit": 1,
            "gasUsed": 0,
        },
        {"number": "1", "id": "0x" + "00" * 32},
        ["not", "a", "block"],
    ],
)
def test_hostile_block_answers_are_response_errors(answer: object) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    with (
        ThorClient("http://n", retries=0, transport=httpx.MockTransport(handler)) as c,
        pytest.raises(NodeResponseError),
    ):
        c.best_block()


_OK = {"data": "0x", "gasUsed": 0, "reverted": False, "vmError": ""}
_REVERTED = {"data": "0x", "gasUsed": 6, "reverted": True, "vmError": "execution reverted"}


@pytest.mark.parametrize(
    "answer",
    [
        [_OK, _OK, _OK, _OK],  # more results than clauses
        [_OK, _OK],  # stopped early without a revert
        [],  # nothing run, nothing reverted
        [_REVERTED, _OK, _OK],  # went on after a revert
        [_OK, _REVERTED, _REVERTED],  # went on after a revert
    ],
)
def test_simulation_of_a_shape_thor_never_answers_is_a_response_error(
    answer: list[dict[str, object]],
) -> None:
    """No node: thor's batchCall answers one result per clause run and stops only right after
    a reverted one (checked on the real node in test_thor_client_real.py); these other shapes
    come only from something that is not thor."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    clauses = [thor.Clause(TO, 0, b"")] * 3
    with (
        ThorClient("http://n", retries=0, transport=httpx.MockTransport(handler)) as c,
        pytest.raises(NodeResponseError, match=r"POST /accounts/\* \(") as exc,
    ):
        c.inspect_clauses(clauses)
    assert exc.value.status is None


def test_hostile_fee_and_simulation_answers_are_response_errors() -> None:
    answers = {
        "/fees/history": {"oldestBlock": "0x00", "baseFeePerGas": ["zz"], "gasUsedRatio": [0]},
        "/accounts/*": [{"data": "0x", "gasUsed": -5, "reverted": False}],
        "/fees/priority": {"maxPriorityFeePerGas": None},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[request.url.path])

    with ThorClient("http://n", retries=0, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(NodeResponseError):
            c.next_base_fee()
        with pytest.raises(NodeResponseError):
            c.inspect_clauses([thor.Clause(TO, 0, b"")])
        with pytest.raises(NodeResponseError):
            c.priority_fee()
