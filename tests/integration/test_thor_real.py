"""Thor anchoring against a real VeChainThor node: thor v2.4.4 ``solo --on-demand``
(``fieldproof.services.ThorSolo``, built by scripts/peers; a missing binary fails, never skips).

What the node does here, from its source (``cmd/thor/solo``, ``bft/engine.go``) and measured:

* on demand, every posted tx that can execute is packed into a block of its own before the
  ``POST /transactions`` answer (so one step posts, the next sees the receipt); an empty block
  is also packed every 10 s, and blocks are dated ``max(now, parent + 10 s)``: driving blocks
  dates them ahead of the clock;
* finality is ``bft.NewSoloMockedEngine``: every epoch counts as committed, ``/blocks/finalized``
  = checkpoint(best) − 360 once best ≥ 360 (180-block epochs), so block M is final once best
  reaches ``ceil(M / 180)·180 + 360``. Reachable: the tests drive ~540 blocks by posting cheap
  txs (a few seconds), and FINALIZED is reached through the node's own finality;
* refusals: ``400 bad tx: chain tag mismatch``; ``403 tx rejected: resolve transaction: …`` for
  what a production pool answers ``400 bad tx: …`` (signature, intrinsic gas, fee fields);
  ``403 tx rejected: …`` for expired, known, out of schedule, energy, base fee.

Nothing here hard-codes the chain tag or genesis: both are read from the node. The rig (start,
dev keys, cheap txs, driving to finality, funding) is tests/support/thor_solo.py, shared with
the other tests on the real node.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from anchor import thor
from anchor.anchoring import (
    AnchorConfig,
    Anchorer,
    AnchorState,
    AnchorStore,
    StepReport,
    anchor_detail,
    node_status,
)
from anchor.service import anchor_views, store_path
from anchor.thor_client import (
    BadTransaction,
    FeeTooLow,
    InsufficientEnergy,
    ThorClient,
    TxRejected,
    WrongNetwork,
)
from anchor.thor_reader import EPOCH_LENGTH, AnchorVerificationError, verify_anchor
from collector.export import export_bundle
from fieldproof.config import CollectorConfig
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.services import ThorSolo
from inspector.verify import verify_bundle
from tests.support.anchoring import ORIGIN, Log
from tests.support.bundles import THOR_KEY, Farm, anchor_thor, rewrite
from tests.support.thor_solo import (
    DEV_KEYS,
    DRIVER_KEY,
    FUNDER_KEY,
    REVERT_RUNTIME,
    STORE_RUNTIME,
    deploy,
    drive_to,
    dynamic,
    expected_final_at,
    send_vtho,
    signed,
    start_solo,
)

pytestmark = pytest.mark.integration

ANCHOR_KEY = thor.SecretKey(DEV_KEYS[3])
SPONSOR_KEY = thor.SecretKey(DEV_KEYS[4])
LEGACY_KEY = thor.SecretKey(DEV_KEYS[6])

BURN_INIT = bytes.fromhex("5b600056")  # JUMPDEST PUSH1 0 JUMP: loops until out of gas


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThorSolo]:
    n = start_solo(tmp_path_factory.mktemp("thor"))
    yield n
    n.stop()


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[ThorSolo]:
    """A fresh chain for a test that moves it far (finality) or changes its base fee."""
    n = start_solo(tmp_path / "thor")
    yield n
    n.stop()


@pytest.fixture
def client(node: ThorSolo) -> Iterator[ThorClient]:
    with ThorClient(node.url, retries=1, sleep=lambda s: None) as c:
        yield c


def steps(anchorer: Anchorer, until: Callable[[StepReport], bool], limit: int = 20) -> StepReport:
    """Step until ``until(report)``; a node on demand needs one step to post, one to see it."""
    for _ in range(limit):
        report = anchorer.step()
        if until(report):
            return report
    raise AssertionError(f"no step of {limit} reached the condition; last: {report}")








# ----------------------------------------------------------------------------- the network


def test_chain_tag_and_network_come_from_the_node(node: ThorSolo, client: ThorClient) -> None:
    genesis = client.genesis()
    assert genesis.number == 0 and genesis.id == node.genesis().id
    assert client.chain_tag() == int(genesis.id[-2:], 16) == node.genesis().chain_tag
    r = httpx.get(f"{node.url}/blocks/best", timeout=10)
    assert r.headers["x-genesis-id"] == genesis.id  # what the client checks on every answer
    assert client.expected_genesis == genesis.id


def test_another_network_is_wrong_network_not_a_refused_tx(
    node: ThorSolo, client: ThorClient
) -> None:
    raw = signed(client, DRIVER_KEY).encode()
    best = client.best_block().number
    other = "0x" + secrets.token_bytes(32).hex()
    with ThorClient(node.url, retries=0, genesis_id=other) as wrong:
        with pytest.raises(WrongNetwork) as exc:
            wrong.send_raw(raw)
        assert exc.value.got == client.genesis().id and exc.value.expected == other
        assert not isinstance(exc.value, TxRejected)
        with pytest.raises(WrongNetwork):
            wrong.best_block()
    assert client.best_block().number == best  # the node packed nothing: it was not taken
    assert client.send_raw(raw) == thor.decode(raw).id_hex()  # the right network takes it


# ----------------------------------------------------------------------------- anchors


@pytest.mark.parametrize(
    ("key", "dynamic_fee"), [(ANCHOR_KEY, True), (LEGACY_KEY, False)], ids=["0x51", "legacy"]
)
def test_anchor_is_included_and_executed(
    client: ThorClient, tmp_path: Path, key: thor.SecretKey, dynamic_fee: bool
) -> None:
    log = Log(42)
    with (
        AnchorStore(tmp_path / "a.db") as store,
        Anchorer(store, client, log, key, config=AnchorConfig(dynamic_fee=dynamic_fee)) as a,
    ):
        first = a.step()
        assert first.node_ok and not first.errors and len(first.submitted) == 1, first
        steps(a, lambda r: bool(r.included))
        row = store.get(1)
        assert row.state is AnchorState.INCLUDED and row.genesis_id == client.genesis().id
        stored = store.get_tx(row.tx_id or "")
    receipt = client.receipt(row.tx_id or "")
    assert receipt is not None and not receipt.reverted and len(receipt.outputs) == 1
    assert receipt.tx_origin == receipt.gas_payer == key.address_hex
    assert receipt.block_number == row.block_number and receipt.block_id == row.block_id
    got = client.raw_transaction(row.tx_id or "")
    assert got is not None and got[0] == stored.raw  # the node holds the bytes we built
    tx = thor.decode(got[0])
    assert tx.id_hex() == row.tx_id  # our id is the node's id
    assert tx.chain_tag == client.chain_tag()
    assert tx.tx_type == (thor.TYPE_DYNAMIC_FEE if dynamic_fee else thor.TYPE_LEGACY)
    assert receipt.tx_type == (thor.TYPE_DYNAMIC_FEE if dynamic_fee else None)
    cp, _ = log.latest or (None, b"")
    assert cp is not None
    assert tx.clauses == (
        thor.Clause(key.address, 0, AnchorRecord.for_checkpoint(ORIGIN, 42, cp.root_hash).encode()),
    )


def test_vip191_sponsor_pays_for_an_origin_without_vtho(client: ThorClient, tmp_path: Path) -> None:
    origin = thor.SecretKey(secrets.token_bytes(32))
    assert client.energy(origin.address) == 0
    sponsor_before = client.energy(SPONSOR_KEY.address)
    with (
        AnchorStore(tmp_path / "a.db") as store,
        Anchorer(store, client, Log(7), origin, sponsor=SPONSOR_KEY) as a,
    ):
        steps(a, lambda r: bool(r.included))
        row = store.get(1)
    assert row.gas_payer == SPONSOR_KEY.address_hex
    receipt = client.receipt(row.tx_id or "")
    assert receipt is not None and not receipt.reverted
    assert receipt.gas_payer == SPONSOR_KEY.address_hex and receipt.tx_origin == origin.address_hex
    info = client.transaction(row.tx_id or "")
    assert info is not None and info.delegator == SPONSOR_KEY.address_hex
    assert client.energy(origin.address) == 0
    assert client.energy(SPONSOR_KEY.address) < sponsor_before


def test_unfunded_origin_without_sponsor_waits_with_advice(
    client: ThorClient, tmp_path: Path
) -> None:
    poor = thor.SecretKey(secrets.token_bytes(32))
    with AnchorStore(tmp_path / "a.db") as store, Anchorer(store, client, Log(3), poor) as a:
        r = a.step()
        assert r.node_ok and r.submitted == []
        assert "insufficient energy" in r.errors[0] and poor.address_hex in r.errors[0]
        assert "VIP-191 sponsor" in r.errors[0]
        row = store.get(1)
        assert row.state is AnchorState.PENDING and row.failures == 1
        assert anchor_detail(row, node_status(store)) == row.last_error


# ----------------------------------------------------------------------------- refusals


def test_refusals_are_classified_as_the_client_intends(client: ThorClient) -> None:
    tag = client.chain_tag()
    with pytest.raises(BadTransaction, match="chain tag mismatch") as e1:
        client.send_raw(signed(client, DRIVER_KEY, chain_tag=(tag + 1) % 256).encode())
    assert e1.value.status == 400

    tx = signed(client, DRIVER_KEY)
    with pytest.raises(BadTransaction, match="invalid signature length") as e2:
        client.send_raw(tx.with_signature(tx.signature[:64]).encode())
    assert e2.value.status == 403  # solo on demand; a production pool says 400 bad tx
    with pytest.raises(BadTransaction, match="invalid signature recovery id"):
        client.send_raw(tx.with_signature(tx.signature[:64] + b"\x07").encode())
    with pytest.raises(BadTransaction, match="recovery failed"):
        client.send_raw(tx.with_signature(bytes(65)).encode())
    # a well-formed signature by another key recovers to another (unfunded) account
    forged = thor.sign_hash(tx.signing_hash(), secrets.token_bytes(32))
    with pytest.raises(InsufficientEnergy):
        client.send_raw(tx.with_signature(forged).encode())

    with pytest.raises(BadTransaction, match="intrinsic gas exceeds provided gas"):
        client.send_raw(signed(client, DRIVER_KEY, gas=20_000).encode())
    with pytest.raises(InsufficientEnergy) as poor:
        client.send_raw(signed(client, secrets.token_bytes(32)).encode())
    assert "VIP-191 sponsor" in str(poor.value)

    with pytest.raises(TxRejected) as expired:
        client.send_raw(signed(client, DRIVER_KEY, block_ref=bytes(8), expiration=1).encode())
    assert expired.value.expired and type(expired.value) is TxRejected

    future = (client.best_block().number + 1000).to_bytes(4, "big") + bytes(4)
    with pytest.raises(TxRejected) as schedule:
        client.send_raw(signed(client, DRIVER_KEY, block_ref=future).encode())
    assert schedule.value.reason == "block ref out of schedule"

    base = client.next_base_fee()
    assert base is not None
    with pytest.raises(FeeTooLow):
        client.send_raw(
            signed(
                client,
                DRIVER_KEY,
                tx_type=thor.TYPE_DYNAMIC_FEE,
                max_fee_per_gas=base - 1,
                max_priority_fee_per_gas=0,
            ).encode()
        )

    assert client.send_raw(tx.encode()) == tx.id_hex()
    with pytest.raises(TxRejected) as known:  # a duplicate of a tx in a block
        client.send_raw(tx.encode())
    assert known.value.known and type(known.value) is TxRejected


# ----------------------------------------------------------------------------- contract `to`


def test_contract_to_is_simulated_or_refused(client: ThorClient, tmp_path: Path) -> None:
    store_contract = deploy(client, STORE_RUNTIME)
    reverting = deploy(client, REVERT_RUNTIME)
    record = b"\x46" * 78
    # what the anchorer used to send: intrinsic gas only, which a contract `to` reverts with
    bare = signed(client, DRIVER_KEY, clauses=(thor.Clause(store_contract, 0, record),))
    client.send_raw(bare.encode())
    receipt = client.receipt(bare.id_hex())
    assert receipt is not None and receipt.reverted

    with (
        AnchorStore(tmp_path / "a.db") as store,
        Anchorer(
            store, client, Log(9), ANCHOR_KEY, config=AnchorConfig(to="0x" + store_contract.hex())
        ) as a,
    ):
        steps(a, lambda r: bool(r.included))
        row = store.get(1)
        tx = thor.decode(store.get_tx(row.tx_id or "").raw)
    receipt = client.receipt(row.tx_id or "")
    assert receipt is not None and not receipt.reverted
    assert tx.gas > receipt.gas_used > tx.intrinsic_gas()  # the simulated execution was added

    with (
        AnchorStore(tmp_path / "b.db") as store,
        Anchorer(
            store, client, Log(9), ANCHOR_KEY, config=AnchorConfig(to="0x" + reverting.hex())
        ) as a,
    ):
        r = a.step()
        assert r.node_ok and r.submitted == []
        assert "reverts when the node simulates it (execution reverted)" in r.errors[0]
        assert store.txs(1) == []


# ----------------------------------------------------------------------------- base fee


def test_legacy_floor_price_is_raised_once_the_base_fee_rises(
    own_node: ThorSolo, tmp_path: Path
) -> None:
    with ThorClient(own_node.url, retries=1, sleep=lambda s: None) as c:
        legacy_base = c.legacy_base_gas_price()
        assert c.next_base_fee() == legacy_base  # solo sets both to 10^13 at start
        # blocks of 39 M gas: above the 75 % target, each raises the fee by up to 12.5 %; the
        # empty block solo packs every 10 s lowers it again, so on a busy machine it takes more
        rising = c.next_base_fee()
        for _ in range(24):
            assert rising is not None
            if rising > legacy_base * 13 // 10:
                break
            burn = signed(
                c,
                FUNDER_KEY,
                clauses=(thor.Clause(None, 0, BURN_INIT),),
                gas=39_000_000,
                **dynamic(c),
            )
            c.send_raw(burn.encode())
            rising = c.next_base_fee()
        assert rising is not None and rising > legacy_base * 13 // 10
        # a legacy tx at the floor price no longer pays the base fee: the node refuses it
        with pytest.raises(FeeTooLow):
            c.send_raw(signed(c, DRIVER_KEY).encode())
        with (
            AnchorStore(tmp_path / "a.db") as store,
            Anchorer(store, c, Log(5), LEGACY_KEY, config=AnchorConfig(dynamic_fee=False)) as a,
        ):
            first = a.step()
            assert first.node_ok and not first.errors, first
            steps(a, lambda r: bool(r.included))
            tx = thor.decode(store.get_tx(store.get(1).tx_id or "").raw)
        assert tx.tx_type == thor.TYPE_LEGACY and tx.gas_price_coef > 0
        receipt = c.receipt(tx.id_hex())
        assert receipt is not None and not receipt.reverted


# ----------------------------------------------------------------------------- node sync


def test_anchoring_pauses_while_the_node_is_not_synced(tmp_path: Path) -> None:
    """A solo node with a day-long block interval packs block 1 at start and then nothing
    until asked: its head ages in real time, as a node's that stopped syncing does."""
    n = start_solo(tmp_path / "thor", "--block-interval", "86400")
    try:
        with (
            ThorClient(n.url, retries=1, sleep=lambda s: None) as c,
            AnchorStore(tmp_path / "a.db") as store,
        ):
            cfg = AnchorConfig(max_block_age_s=2.0)
            with Anchorer(store, c, Log(11), ANCHOR_KEY, config=cfg) as a:
                deadline = time.monotonic() + 60
                while True:  # wait for the head to be 2 s old by both clocks
                    best, node_time = c.best_block_and_node_time()
                    assert node_time is not None
                    if min(time.time(), node_time) - best.timestamp > 2.5:
                        break
                    assert time.monotonic() < deadline, "the head never aged"
                    time.sleep(0.2)
                r = a.step()
                assert not r.node_ok and r.paused is not None
                assert f"best block #{best.number} is" in r.paused and "not synced" in r.paused
                assert r.created == [] and r.submitted == []
                status = node_status(store)
                assert status is not None and not status.synced
                assert status.best_number == best.number
                assert status.finalized_number == c.finalized_block().number

                # the node gets a block again (dated a day ahead, on demand): synced
                c.send_raw(signed(c, DRIVER_KEY).encode())
                r = a.step()
                assert r.node_ok and r.paused is None and r.created == [1], r
                steps(a, lambda r: bool(r.included))
    finally:
        n.stop()


# ----------------------------------------------------------------------------- finality


def test_finalized_through_the_nodes_own_finality(own_node: ThorSolo, tmp_path: Path) -> None:
    config = CollectorConfig(collector_id="c1", data_dir=tmp_path)  # where `anchor status` looks
    with (
        ThorClient(own_node.url, retries=1, sleep=lambda s: None) as c,
        AnchorStore(store_path(config, "thor")) as store,
    ):
        log = Log(100)
        cp, _ = log.latest or (None, b"")
        assert cp is not None
        with Anchorer(store, c, log, ANCHOR_KEY) as a:
            r = steps(a, lambda r: bool(r.included))
            row = store.get(1)
            block = row.block_number or 0
            expected = expected_final_at(block)
            # not final, and the step says by how much and why, with the node's numbers
            gap = r.not_final[1]
            assert gap.block_number == block and gap.finalized_number == 0
            assert gap.expected_at_best == expected
            assert r.node is not None and gap.best_number == r.node.best_number >= block
            assert "not final yet" in gap.explain() and f"#{expected}" in gap.explain()
            detail = anchor_detail(store.get(1), node_status(store))
            assert detail is not None and f"{gap.blocks_behind} blocks below it" in detail
            (view,) = anchor_views(config)  # what `fieldproof anchor status` shows
            assert view.state == "included" and view.detail == detail
            assert view.blocks_behind_finalized == gap.blocks_behind == block
            assert view.expected_final_at_best == expected
            assert (view.node_finalized, view.node_best) == (0, gap.best_number)
            with pytest.raises(AnchorVerificationError, match="not finalized yet"):
                verify_anchor(c, row.tx_id or "", ORIGIN, 100, cp.root_hash)
            v = verify_anchor(
                c, row.tx_id or "", ORIGIN, 100, cp.root_hash, require_finalized=False
            )
            assert not v.finalized and v.block_number == block

            # two epochs in: the finalized block has moved (to 0 at 360), still not to ours
            drive_to(c, expected - EPOCH_LENGTH)
            r = a.step()
            assert store.get(1).state is AnchorState.INCLUDED
            assert r.node is not None and r.node.finalized_number < block
            assert r.not_final[1].finalized_number == c.finalized_block().number < block

            t0 = time.monotonic()
            drive_to(c, expected)
            drove_s = time.monotonic() - t0
            r = a.step()
            assert r.finalized == [1], (r, drove_s)
            assert c.finalized_block().number >= block
            assert store.get(1).state is AnchorState.FINALIZED

        # the inspector's check passes the real anchor and fails tampered claims
        v = verify_anchor(c, row.tx_id or "", ORIGIN, 100, cp.root_hash, genesis_id=c.genesis().id)
        assert v.finalized and v.block_number == block and v.sender == ANCHOR_KEY.address_hex
        with pytest.raises(AnchorVerificationError, match="no anchor record"):
            verify_anchor(c, row.tx_id or "", ORIGIN, 100, bytes(32))
        with pytest.raises(AnchorVerificationError, match="no anchor record"):
            verify_anchor(c, row.tx_id or "", ORIGIN, 101, cp.root_hash)
        with pytest.raises(AnchorVerificationError, match="genesis"):
            verify_anchor(
                c, row.tx_id or "", ORIGIN, 100, cp.root_hash, genesis_id="0x" + "00" * 32
            )


def test_fieldproof_verify_against_the_real_node(own_node: ThorSolo, tmp_path: Path) -> None:
    """The whole inspector path: a collector's log anchored on the real node until final,
    exported as a bundle, verified by ``verify_bundle`` (what ``fieldproof verify`` runs)
    against the node; then the same bundle with its anchor pointing at another tx fails."""
    now = time.time()
    with ThorClient(own_node.url, retries=1, sleep=lambda s: None) as c:
        send_vtho(c, THOR_KEY.address, 10**21)
        cheap = signed(c, DRIVER_KEY)
        c.send_raw(cheap.encode())
        farm = Farm(tmp_path / "farm")
        try:
            g = farm.enroll()
            farm.run(g, now - 3600, 10)
            farm.checkpoint()
            tx_id = anchor_thor(
                farm, own_node.url, lambda: drive_to(c, expected_final_at(c.best_block().number))
            )
            data = export_bundle(
                farm.config,
                farm=None,
                field=None,
                gateway=None,
                start=now - 86_400,
                end=now + 86_400,
            )
            vkey = farm.vkey
        finally:
            farm.close()
    result = verify_bundle(data, nodes=[own_node.url], chain=None, offline=False, log_key=vkey)
    assert result.verdict == "pass", result.findings
    (checked,) = result.checkpoints
    assert checked.anchored and checked.anchors[0].verified

    def other_tx(obj: dict[str, Any]) -> None:
        (anchor,) = obj["checkpoints"][-1]["anchors"]
        assert anchor["tx"] == tx_id
        anchor["tx"] = cheap.id_hex()  # a real tx on the same chain, but not this anchor

    tampered = verify_bundle(
        rewrite(data, other_tx), nodes=[own_node.url], chain=None, offline=False, log_key=vkey
    )
    assert tampered.verdict == "fail"
