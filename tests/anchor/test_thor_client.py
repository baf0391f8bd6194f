"""ThorClient against the Thor node test double (tests/support/thornode.py), and the refusal
classifier on the exact texts thor v2.4.4 answers.

The same client runs against a real thor solo node in tests/integration/test_thor_real.py;
here the double covers faults (outages, 5xx, lost answers), a production tx pool's wording
(``400 bad tx: …``) beside solo's (``403 tx rejected: resolve transaction: …``), and hostile
answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
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
from tests.support.thornode import INITIAL_BASE_FEE, ThorNode, funded

ORIGIN_KEY = thor.SecretKey(
    bytes.fromhex("7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a")
)
SPONSOR_KEY = thor.SecretKey(
    bytes.fromhex("321d6443bc6177273b5abf54210fe806d451d6b7973bccc2384ef78bbcd0bf51")
)
POOR_KEY = thor.SecretKey(b"\x42" * 32)
TO = b"\x77" * 20


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


def build(
    client: ThorClient,
    *,
    key: thor.SecretKey = ORIGIN_KEY,
    sponsor: thor.SecretKey | None = None,
    dynamic: bool = True,
    **overrides: object,
) -> thor.Transaction:
    best = client.best_block()
    clause = thor.Clause(TO, 0, b"\x01\x02\x00")
    fields: dict[str, object] = {
        "chain_tag": client.chain_tag(),
        "block_ref": best.block_ref,
        "expiration": 32,
        "clauses": (clause,),
        "gas": thor.intrinsic_gas([clause]),
        "nonce": 7,
    }
    if dynamic:
        fields.update(tx_type=0x51, max_fee_per_gas=2 * 10**13, max_priority_fee_per_gas=10**11)
    fields.update(overrides)
    tx = thor.Transaction(**fields)  # type: ignore[arg-type]
    return thor.sign_transaction(
        tx, key.secret_bytes(), None if sponsor is None else sponsor.secret_bytes()
    )


# ---------------------------------------------------------------------------- blocks


def test_genesis_chain_tag_and_block_ref(client: ThorClient, node: ThorNode) -> None:
    g = client.genesis()
    assert g.number == 0
    assert g.id == node.genesis_id
    assert client.chain_tag() == node.chain_tag == int(g.id[-2:], 16)
    best = client.best_block()
    assert best.block_ref == bytes.fromhex(best.id[2:18])
    assert int.from_bytes(best.block_ref[:4], "big") == best.number


def test_best_and_finalized_follow_the_chain(client: ThorClient, node: ThorNode) -> None:
    node.mine(5)
    best = client.best_block()
    assert best.number == 5
    assert best.base_fee_per_gas == node.base_fee
    fin = client.finalized_block()
    assert fin.number == 2
    assert fin.is_finalized
    blk = client.block(4)
    assert blk is not None
    assert blk.is_trunk
    assert not blk.is_finalized
    assert blk.parent_id == node.block_id(3)
    by_id = client.block(blk.id)
    assert by_id == blk
    assert client.block(99) is None


# ---------------------------------------------------------------------------- sending


def test_send_receipt_and_lookup(client: ThorClient, node: ThorNode) -> None:
    tx = build(client)
    tx_id = client.send_raw(tx.encode())
    assert tx_id == tx.id_hex()
    assert client.receipt(tx_id) is None
    pending = client.transaction(tx_id, pending=True)
    assert pending is not None
    assert pending.meta is None
    assert client.transaction(tx_id) is None  # without pending=true only chain txs

    assert client.send_raw(tx.encode()) == tx_id  # the same bytes again: accepted, same id
    energy_before = client.energy(ORIGIN_KEY.address)
    node.mine()

    r = client.receipt(tx_id)
    assert r is not None
    assert r.tx_id == tx_id
    assert not r.reverted
    assert r.gas_used == tx.intrinsic_gas()
    assert r.gas_payer == ORIGIN_KEY.address_hex == r.tx_origin
    price = min(tx.max_fee_per_gas, tx.max_priority_fee_per_gas + node.base_fee)
    assert r.paid == r.gas_used * price
    assert client.energy(ORIGIN_KEY.address) == energy_before - r.paid
    assert r.block_number == 1
    assert r.block_id == node.block_id(1)

    info = client.transaction(tx_id)
    assert info is not None
    assert info.meta is not None
    assert info.meta.block_id == r.block_id
    assert info.origin == ORIGIN_KEY.address_hex
    assert info.delegator is None
    assert info.clauses[0].data == b"\x01\x02\x00"
    assert info.clauses[0].to == "0x" + TO.hex()
    got = client.raw_transaction(tx_id)
    assert got is not None
    assert got[0] == tx.encode()
    block = client.block(1)
    assert block is not None
    assert tx_id in block.transactions


def test_legacy_tx_is_accepted(client: ThorClient, node: ThorNode) -> None:
    tx = build(client, dynamic=False, gas_price_coef=128)
    tx_id = client.send_raw(tx.encode())
    node.mine()
    r = client.receipt(tx_id)
    assert r is not None
    assert r.tx_type is None
    base = node.legacy_base_gas_price
    assert r.paid == r.gas_used * (base + base * 128 // 255)


def test_delegated_tx_is_paid_by_the_sponsor(client: ThorClient, node: ThorNode) -> None:
    node.set_energy(POOR_KEY.address, 0)
    tx = build(client, key=POOR_KEY, sponsor=SPONSOR_KEY)
    tx_id = client.send_raw(tx.encode())
    node.mine()
    r = client.receipt(tx_id)
    assert r is not None
    assert r.gas_payer == SPONSOR_KEY.address_hex
    assert r.tx_origin == POOR_KEY.address_hex
    info = client.transaction(tx_id)
    assert info is not None
    assert info.delegator == SPONSOR_KEY.address_hex
    assert client.energy(POOR_KEY.address) == 0


def test_account_and_priority_fee(client: ThorClient, node: ThorNode) -> None:
    acc = client.account(ORIGIN_KEY.address_hex)
    assert acc.energy == 10**21
    assert acc.balance == 0
    assert not acc.has_code
    assert client.priority_fee() == node.priority_fee


# ---------------------------------------------------------------------------- rejections


def test_bad_chain_tag_is_400(client: ThorClient) -> None:
    tx = build(client, chain_tag=(client.chain_tag() + 1) % 256)
    with pytest.raises(BadTransaction) as exc:
        client.send_raw(tx.encode())
    assert exc.value.status == 400
    assert exc.value.node_message == "bad tx: chain tag mismatch"
    assert "chain tag mismatch" in str(exc.value)
    assert "network" in str(exc.value)


def test_malformed_raw_is_400(client: ThorClient) -> None:
    raw = build(client).encode()
    with pytest.raises(BadTransaction, match="raw: "):
        client.send_raw(raw[:-3])


def test_bad_signatures_are_400(client: ThorClient) -> None:
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


def test_signature_by_another_key_reads_as_another_origin(client: ThorClient) -> None:
    """As on the real node: a valid signature by the wrong key recovers to a different
    account, which has no VTHO, so the tx is refused for energy."""
    tx = build(client)
    forged = tx.with_signature(thor.sign_hash(tx.signing_hash(), POOR_KEY.secret_bytes()))
    with pytest.raises(InsufficientEnergy) as exc:
        client.send_raw(forged.encode())
    assert POOR_KEY.address_hex in str(exc.value)


def test_too_little_gas_is_400(client: ThorClient) -> None:
    tx = build(client, gas=21000)
    with pytest.raises(BadTransaction, match="intrinsic gas exceeds provided gas"):
        client.send_raw(tx.encode())


def test_insufficient_energy_is_403_and_names_the_payer(client: ThorClient) -> None:
    tx = build(client, key=POOR_KEY)
    with pytest.raises(InsufficientEnergy) as exc:
        client.send_raw(tx.encode())
    e = exc.value
    assert e.status == 403
    assert e.node_message == "tx rejected: insufficient energy"
    assert POOR_KEY.address_hex in str(e)
    assert "VIP-191 sponsor" in str(e)


def test_insufficient_sponsor_energy_names_the_sponsor(client: ThorClient) -> None:
    broke_sponsor = thor.SecretKey(b"\x43" * 32)
    tx = build(client, key=ORIGIN_KEY, sponsor=broke_sponsor)
    with pytest.raises(InsufficientEnergy) as exc:
        client.send_raw(tx.encode())
    assert "sponsor" in str(exc.value)
    assert broke_sponsor.address_hex in str(exc.value)


def test_expired_tx_is_403(client: ThorClient, node: ThorNode) -> None:
    tx = build(client, expiration=3)
    node.mine(3)  # next block is 4 > 0 + 3
    with pytest.raises(TxRejected) as exc:
        client.send_raw(tx.encode())
    assert exc.value.status == 403
    assert exc.value.expired
    assert exc.value.node_message == "tx rejected: expired"


def test_base_fee_too_high_is_403(client: ThorClient, node: ThorNode) -> None:
    tx = build(client, max_fee_per_gas=node.base_fee - 1, max_priority_fee_per_gas=0)
    with pytest.raises(FeeTooLow, match="gas price is less than block base fee"):
        client.send_raw(tx.encode())


def test_known_tx_is_403_known(client: ThorClient, node: ThorNode) -> None:
    tx = build(client)
    client.send_raw(tx.encode())
    node.mine()
    with pytest.raises(TxRejected) as exc:
        client.send_raw(tx.encode())
    assert exc.value.known


# ---------------------------------------------------------------------------- faults


def test_node_down_is_a_clear_error(client: ThorClient, node: ThorNode, sleeps: Sleeps) -> None:
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
    raw = build(client).encode()
    node.go_down()
    with pytest.raises(NodeUnreachable):
        client.send_raw(raw)
    node.come_up()
    assert client.send_raw(raw) == thor.decode(raw).id_hex()


def test_transient_5xx_is_retried(client: ThorClient, node: ThorNode, sleeps: Sleeps) -> None:
    node.fail_next(2)
    assert client.best_block().number == 0
    assert sleeps.calls == [0.5, 1.0]


def test_persistent_5xx_is_a_response_error(client: ThorClient, node: ThorNode) -> None:
    node.fail_next(3)
    with pytest.raises(NodeResponseError) as exc:
        client.best_block()
    assert exc.value.status == 503


def test_backoff_is_capped(node: ThorNode) -> None:
    sleeps = Sleeps()
    node.go_down()
    with (
        ThorClient(node.url, retries=5, backoff=1.0, max_backoff=3.0, sleep=sleeps) as c,
        pytest.raises(NodeUnreachable),
    ):
        c.genesis()
    assert sleeps.calls == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_not_a_thor_api_is_a_response_error(node: ThorNode, sleeps: Sleeps) -> None:
    with (
        ThorClient(node.url + "/nothing", retries=0, sleep=sleeps) as c,
        pytest.raises(NodeResponseError) as exc,
    ):
        c.best_block()
    assert exc.value.status == 404
    assert "8669" in str(exc.value)


def test_bad_tx_id_is_refused_locally(client: ThorClient) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        client.receipt("0x1234")


# ------------------------------------------------------------------- the double's wire contract


def test_double_speaks_the_rest_contract(node: ThorNode) -> None:
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


def test_solo_pool_says_403_for_bad_txs_and_the_client_still_knows(shared_dir: Path) -> None:
    with (
        ThorNode(pool="solo", energy=funded(ORIGIN_KEY.address)) as solo,
        ThorClient(solo.url, retries=0) as c,
    ):
        with pytest.raises(BadTransaction) as exc:
            c.send_raw(build(c, gas=21000).encode())
        assert exc.value.status == 403
        assert exc.value.node_message == (
            "tx rejected: resolve transaction: intrinsic gas exceeds provided gas"
        )
        tx = build(c)
        with pytest.raises(BadTransaction, match="resolve transaction: invalid signature length"):
            c.send_raw(tx.with_signature(tx.signature[:64]).encode())
        with pytest.raises(BadTransaction, match=r"HTTP 400.*chain tag mismatch"):
            c.send_raw(build(c, chain_tag=(c.chain_tag() + 1) % 256).encode())


# ---------------------------------------------------------------------------- the network


def test_every_request_names_the_network_once_known(client: ThorClient, node: ThorNode) -> None:
    assert client.expected_genesis is None
    client.best_block()
    assert node.genesis_headers == [None]  # not known yet: nothing to send
    client.genesis()
    client.best_block()
    client.send_raw(build(client).encode())
    assert node.genesis_headers[-3:] == [node.genesis_id] * 3
    assert client.expected_genesis == node.genesis_id


def test_a_node_of_another_network_is_wrong_network_not_a_refusal(node: ThorNode) -> None:
    other_genesis = "0x" + "11" * 32
    with ThorClient(node.url, retries=0, genesis_id=other_genesis) as c:
        with pytest.raises(WrongNetwork) as exc:
            c.best_block()
        assert exc.value.expected == other_genesis and exc.value.got == node.genesis_id
        with pytest.raises(WrongNetwork):
            c.send_raw(b"\x00")
        assert not isinstance(exc.value, TxRejected)
    assert node.submissions == []
    with ThorClient(node.url, retries=0) as c:
        c.genesis()
        with pytest.raises(WrongNetwork):
            c.expect_genesis(other_genesis)


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
    node.mine(3)
    node.lag_s = 75
    best, node_time = client.best_block_and_node_time()
    assert best.number == 3
    assert node_time == int(node.node_time) == best.timestamp + 75


# ---------------------------------------------------------------------------- fees, simulation


def test_fee_history_and_next_base_fee(client: ThorClient, node: ThorNode) -> None:
    node.mine(2)
    node.base_fee = 12 * 10**12
    assert client.next_base_fee() == 12 * 10**12
    hist = client.fee_history(3, "best")
    assert hist.oldest_block == node.block_id(0)
    assert hist.base_fee_per_gas == (INITIAL_BASE_FEE,) * 3  # the fee they were mined at
    assert hist.gas_used_ratio == (0.0, 0.0, 0.0)
    with pytest.raises(NodeResponseError) as exc:
        client.fee_history(1, "nope")
    assert exc.value.status == 400
    with pytest.raises(ValueError, match="block_count"):
        client.fee_history(0)


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


def test_clause_simulation_and_legacy_base_price(client: ThorClient, node: ThorNode) -> None:
    contract, reverting = b"\xc0" * 20, b"\xc1" * 20
    node.deploy(contract, gas=31_000)
    node.deploy(reverting, revert=True)
    ok_run, bad_run, plain = client.inspect_clauses(
        [thor.Clause(contract, 0, b"x"), thor.Clause(reverting, 0, b"x"), thor.Clause(TO, 0, b"")],
        caller=ORIGIN_KEY.address,
    )
    assert (ok_run.gas_used, ok_run.reverted) == (31_000, False)
    assert bad_run.reverted and bad_run.vm_error == "execution reverted"
    assert (plain.gas_used, plain.reverted) == (0, False)
    assert client.account(contract).has_code and not client.account(TO).has_code
    node.legacy_base_gas_price = 10**15
    assert client.legacy_base_gas_price() == 10**15


def test_receipt_seen_from_a_head(client: ThorClient, node: ThorNode) -> None:
    tx_id = client.send_raw(build(client).encode())
    node.mine(3)  # in block 1; finalized 0
    fin = client.finalized_block()
    assert fin.number == 0
    assert client.receipt(tx_id, head=fin.id) is None  # not at or below finalized
    assert client.receipt(tx_id, head=node.block_id(1)) is not None
    node.mine()
    fin = client.finalized_block()
    got = client.receipt(tx_id, head=fin.id)
    assert got is not None and got.block_number == 1
    with pytest.raises(NodeResponseError, match="head: leveldb: not found"):
        client.receipt(tx_id, head="0x" + "00" * 32)


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
