"""ThorClient against the Thor node test double (tests/support/thornode.py).

No VeChainThor node can run on these machines (Go build, no Docker engine): the client is proven
against a server implementing the REST contract in shared/reference/thor-rest-api.yaml, which
rejects bad chainTag, bad signature, expired blockRef and insufficient energy as the node does.
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
    InsufficientEnergy,
    NodeResponseError,
    NodeUnreachable,
    ThorClient,
    TxRejected,
)
from tests.support.thornode import ThorNode, funded

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
    with ThorNode(
        chain_tag=0x27, finality_depth=3, energy=funded(ORIGIN_KEY.address, SPONSOR_KEY.address)
    ) as n:
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
    assert client.chain_tag() == 0x27 == int(g.id[-2:], 16)
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
    tx = build(client, chain_tag=0x4A)
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
    with pytest.raises(TxRejected, match="gas price is less than block base fee"):
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
