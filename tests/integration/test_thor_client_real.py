"""ThorClient's ordinary paths on a real VeChainThor node: thor v2.4.4 ``solo --on-demand``, one
node for the module (tests/support/thor_solo.py).

Blocks, sending, receipts, tx lookup, fees, clause simulation and the node's refusals as solo
words them. On demand the node packs each tx it takes into a block of its own before it answers.
The double in tests/anchor/test_thor_client.py keeps what this node cannot be made to do:
outages, 5xx, a production pool's ``400 bad tx: …`` wording, a node that lags, hostile answers;
where the double imitates an answer checked here, a test asks both and compares them.
"""

from __future__ import annotations

import secrets
import time
from functools import partial

import httpx
import pytest

from anchor import thor
from anchor.thor_client import (
    BadTransaction,
    FeeTooLow,
    InsufficientEnergy,
    NodeResponseError,
    ThorClient,
    TxRejected,
    WrongNetwork,
)
from tests.support import thor_solo
from tests.support.thor_solo import DEV_KEYS, SoloChain, deploy, drive_to, finalize
from tests.support.thor_txs import TO, build_tx
from tests.support.thornode import ThorNode

pytestmark = pytest.mark.integration

ORIGIN_KEY = thor.SecretKey(DEV_KEYS[2])
SPONSOR_KEY = thor.SecretKey(DEV_KEYS[4])


chain, client = thor_solo.chain, thor_solo.client  # the rig's fixtures, bound by name


#: every tx of this module: ORIGIN_KEY's unless a test names another key
build = partial(build_tx, key=ORIGIN_KEY)


# ---------------------------------------------------------------------------- blocks


def test_genesis_chain_tag_and_block_ref(client: ThorClient, chain: SoloChain) -> None:
    g = client.genesis()
    assert g.number == 0
    assert g.id == chain.node.genesis().id
    assert client.chain_tag() == chain.node.genesis().chain_tag == int(g.id[-2:], 16)
    best = client.best_block()
    assert best.block_ref == bytes.fromhex(best.id[2:18])
    assert int.from_bytes(best.block_ref[:4], "big") == best.number


def test_best_and_finalized_follow_the_chain(client: ThorClient) -> None:
    drive_to(client, client.best_block().number + 3)
    best = client.best_block()
    assert best.base_fee_per_gas is not None and best.base_fee_per_gas >= 10**13
    blk = client.block(best.number - 1)
    assert blk is not None and blk.is_trunk
    assert best.parent_id == blk.id
    assert client.block(blk.id) == blk
    assert client.block(best.number + 10_000) is None
    finalize(client)
    best = client.best_block()
    fin = client.finalized_block()
    assert fin.is_finalized
    assert fin.number == best.number // 180 * 180 - 360  # solo's finality, in 180-block epochs
    above = client.block(fin.number + 1)
    assert above is not None and not above.is_finalized


# ---------------------------------------------------------------------------- sending


def test_send_receipt_and_lookup(client: ThorClient) -> None:
    tx = build(client)
    energy_before = client.energy(ORIGIN_KEY.address)
    tx_id = client.send_raw(tx.encode())
    assert tx_id == tx.id_hex()

    r = client.receipt(tx_id)  # on demand: in a block before the answer
    assert r is not None
    assert r.tx_id == tx_id
    assert not r.reverted
    assert r.gas_used == tx.intrinsic_gas()
    assert r.gas_payer == ORIGIN_KEY.address_hex == r.tx_origin
    block = client.block(r.block_id)
    assert block is not None and block.number == r.block_number
    assert tx_id in block.transactions
    assert block.base_fee_per_gas is not None
    price = min(tx.max_fee_per_gas, tx.max_priority_fee_per_gas + block.base_fee_per_gas)
    assert r.paid == r.gas_used * price
    # the energy an account holds also grows with its VET balance block by block: paid is a
    # lower bound of what it lost, never exceeded by what it gained
    assert client.energy(ORIGIN_KEY.address) <= energy_before - r.paid + 10**18

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
    assert client.transaction("0x" + secrets.token_bytes(32).hex()) is None


def test_legacy_tx_is_accepted(client: ThorClient) -> None:
    tx = build(client, dynamic=False, gas_price_coef=128)
    tx_id = client.send_raw(tx.encode())
    r = client.receipt(tx_id)
    assert r is not None
    assert r.tx_type is None
    base = client.legacy_base_gas_price()
    assert r.paid == r.gas_used * (base + base * 128 // 255)


def test_delegated_tx_is_paid_by_the_sponsor(client: ThorClient) -> None:
    poor = thor.SecretKey(secrets.token_bytes(32))
    tx = build(client, key=poor, sponsor=SPONSOR_KEY)
    tx_id = client.send_raw(tx.encode())
    r = client.receipt(tx_id)
    assert r is not None
    assert r.gas_payer == SPONSOR_KEY.address_hex
    assert r.tx_origin == poor.address_hex
    info = client.transaction(tx_id)
    assert info is not None
    assert info.delegator == SPONSOR_KEY.address_hex
    assert client.energy(poor.address) == 0


def test_account_and_priority_fee(client: ThorClient, chain: SoloChain) -> None:
    acc = client.account(ORIGIN_KEY.address_hex)
    assert acc.energy > 0 and acc.balance > 0  # a dev account holds VET and VTHO
    assert not acc.has_code
    fresh = client.account(secrets.token_bytes(20))
    assert (fresh.balance, fresh.energy, fresh.has_code) == (0, 0, False)
    raw = httpx.get(f"{chain.url}/fees/priority", timeout=10).json()["maxPriorityFeePerGas"]
    assert client.priority_fee() == int(raw, 16)


# ---------------------------------------------------------------------------- refusals


def test_bad_chain_tag_is_400(client: ThorClient) -> None:
    tx = build(client, chain_tag=(client.chain_tag() + 1) % 256)
    with pytest.raises(BadTransaction) as exc:
        client.send_raw(tx.encode())
    assert exc.value.status == 400
    assert exc.value.node_message == "bad tx: chain tag mismatch"
    assert "network" in str(exc.value)


def test_insufficient_energy_is_403_and_names_the_payer(client: ThorClient) -> None:
    poor = thor.SecretKey(secrets.token_bytes(32))
    with pytest.raises(InsufficientEnergy) as exc:
        client.send_raw(build(client, key=poor).encode())
    e = exc.value
    assert e.status == 403
    assert e.node_message == "tx rejected: insufficient energy"
    assert poor.address_hex in str(e)
    assert "VIP-191 sponsor" in str(e)


def test_insufficient_sponsor_energy_names_the_sponsor(client: ThorClient) -> None:
    broke_sponsor = thor.SecretKey(secrets.token_bytes(32))
    with pytest.raises(InsufficientEnergy) as exc:
        client.send_raw(build(client, sponsor=broke_sponsor).encode())
    assert "sponsor" in str(exc.value)
    assert broke_sponsor.address_hex in str(exc.value)


def test_expired_tx_is_403(client: ThorClient) -> None:
    tx = build(client, expiration=3)
    drive_to(client, tx.block_ref_number + 3)  # the next block is past blockRef + 3
    with pytest.raises(TxRejected) as exc:
        client.send_raw(tx.encode())
    assert exc.value.status == 403
    assert exc.value.expired
    assert exc.value.node_message == "tx rejected: expired"


def test_base_fee_too_high_is_403(client: ThorClient) -> None:
    base = client.next_base_fee()
    assert base is not None
    tx = build(client, max_fee_per_gas=base - 1, max_priority_fee_per_gas=0)
    with pytest.raises(FeeTooLow, match="gas price is less than block base fee") as exc:
        client.send_raw(tx.encode())
    assert exc.value.status == 403


def test_known_tx_is_403_known(client: ThorClient) -> None:
    tx = build(client)
    client.send_raw(tx.encode())
    with pytest.raises(TxRejected) as exc:
        client.send_raw(tx.encode())
    assert exc.value.known and exc.value.status == 403


# ---------------------------------------------------------------------------- the network


def test_a_node_of_another_network_is_wrong_network_not_a_refusal(chain: SoloChain) -> None:
    ours = chain.node.genesis().id
    other_genesis = "0x" + "11" * 32
    best = chain.client.best_block().number
    with ThorClient(chain.url, retries=0, genesis_id=other_genesis) as c:
        with pytest.raises(WrongNetwork) as exc:
            c.best_block()
        assert exc.value.expected == other_genesis and exc.value.got == ours
        with pytest.raises(WrongNetwork) as sent:
            c.send_raw(build(chain.client).encode())
        assert not isinstance(sent.value, TxRejected)
    assert chain.client.best_block().number == best  # nothing was packed
    with ThorClient(chain.url, retries=0) as c:
        c.genesis()
        with pytest.raises(WrongNetwork):
            c.expect_genesis(other_genesis)


def test_node_time_comes_from_its_date_header(client: ThorClient) -> None:
    before = int(time.time())
    best, node_time = client.best_block_and_node_time()
    after = time.time()
    assert node_time is not None and before <= node_time <= after  # the host's clock, to 1 s
    assert best.number >= 1


# ---------------------------------------------------------------------------- fees, simulation


def test_fee_history_and_next_base_fee(client: ThorClient) -> None:
    drive_to(client, client.best_block().number + 2)
    best = client.best_block()
    hist = client.fee_history(3, best.number)
    oldest = client.block(best.number - 2)
    assert oldest is not None and hist.oldest_block == oldest.id
    assert len(hist.base_fee_per_gas) == len(hist.gas_used_ratio) == 3
    assert hist.base_fee_per_gas[-1] == best.base_fee_per_gas
    assert all(0.0 <= r <= 1.0 for r in hist.gas_used_ratio)
    nxt = client.next_base_fee()
    assert nxt is not None and nxt >= 10**13  # solo's floor
    with pytest.raises(NodeResponseError) as exc:
        client.fee_history(1, "nope")
    assert exc.value.status == 400
    with pytest.raises(ValueError, match="block_count"):
        client.fee_history(0)


def test_clause_simulation_stops_at_the_first_revert(client: ThorClient) -> None:
    """Three clauses in one call (store, REVERT, plain account): thor runs the first two and
    answers no result for the third (api/accounts batchCall returns at the first VM error)."""
    contract = deploy(client, thor_solo.STORE_RUNTIME)
    reverting = deploy(client, thor_solo.REVERT_RUNTIME)
    clauses = [
        thor.Clause(contract, 0, b"x"),
        thor.Clause(reverting, 0, b"x"),
        thor.Clause(TO, 0, b""),
    ]
    sim = client.inspect_clauses(clauses, caller=ORIGIN_KEY.address)
    assert sim.clause_count == 3
    assert len(sim.results) == 2
    assert sim.reverted_at == 1
    assert list(sim.not_run) == [2]
    stored, bad_run = sim.results
    assert stored.gas_used > 20_000 and not stored.reverted  # one SSTORE to a fresh slot
    assert bad_run.reverted and bad_run.vm_error == "execution reverted"
    assert bad_run.gas_used == 3 + 3  # PUSH1 0, PUSH1 0 (3 gas each); REVERT itself costs 0


def test_clause_simulation_without_revert_answers_every_clause(client: ThorClient) -> None:
    contract = deploy(client, thor_solo.STORE_RUNTIME)
    sim = client.inspect_clauses(
        [thor.Clause(contract, 0, b"x"), thor.Clause(TO, 0, b"")], caller=ORIGIN_KEY.address
    )
    assert (sim.reverted_at, list(sim.not_run)) == (None, [])
    ok_run, plain = sim.results
    assert ok_run.gas_used > 20_000 and not ok_run.reverted
    assert (plain.gas_used, plain.reverted) == (0, False)
    assert client.account(contract).has_code and not client.account(TO).has_code
    assert client.legacy_base_gas_price() == 10**13  # solo's Params base-gas-price


def test_the_double_simulates_a_revert_as_the_real_node(client: ThorClient) -> None:
    """The double (tests/support/thornode.py) must answer the three-clause call like thor."""
    contract = deploy(client, thor_solo.STORE_RUNTIME)
    reverting = deploy(client, thor_solo.REVERT_RUNTIME)
    body = {
        "clauses": [
            {"to": "0x" + contract.hex(), "value": "0x0", "data": "0x78"},
            {"to": "0x" + reverting.hex(), "value": "0x0", "data": "0x78"},
            {"to": "0x" + TO.hex(), "value": "0x0", "data": "0x"},
        ]
    }
    real = httpx.post(f"{client.base_url}/accounts/*", json=body, timeout=10).json()
    with ThorNode() as double:
        double.deploy(contract)
        double.deploy(reverting, revert=True)
        doubled = httpx.post(f"{double.url}/accounts/*", json=body, timeout=10).json()

    def shape(answer: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [(sorted(r), r["reverted"], r["vmError"]) for r in answer]

    assert len(real) == 2
    assert shape(doubled) == shape(real)
    assert doubled[1]["gasUsed"] == real[1]["gasUsed"]


def test_receipt_seen_from_a_head(client: ThorClient) -> None:
    tx_id = client.send_raw(build(client).encode())
    r = client.receipt(tx_id)
    assert r is not None
    fin = client.finalized_block()
    assert fin.number < r.block_number
    assert client.receipt(tx_id, head=fin.id) is None  # not at or below finalized
    assert client.receipt(tx_id, head=r.block_id) is not None
    finalize(client)
    fin = client.finalized_block()
    got = client.receipt(tx_id, head=fin.id)
    assert got is not None and got.block_number == r.block_number
    with pytest.raises(NodeResponseError, match="head"):
        client.receipt(tx_id, head="0x" + "00" * 32)


def test_not_a_thor_api_is_a_response_error(chain: SoloChain) -> None:
    """A URL with a wrong path: the real node's 404 says it is not a Thor REST API root."""
    with (
        ThorClient(chain.url + "/nothing", retries=0, sleep=lambda s: None) as c,
        pytest.raises(NodeResponseError) as exc,
    ):
        c.best_block()
    assert exc.value.status == 404
    assert "8669" in str(exc.value)
