"""The anchorer's and ``fieldproof anchor``'s ordinary paths on a real VeChainThor node (thor
v2.4.4 ``solo --on-demand``, one node for the module: tests/support/thor_solo.py).

On demand the node packs every tx it accepts into a block of its own before it answers, so an
anchor is in a block one step after it was posted; finality is driven by posting cheap txs
(``finalize``). The anchorer's own clock is injected (backoff, intervals); the node's is real.
What a real node cannot be made to do (outages, lost or dropped txs, reorgs, a lagging node,
base fees set at will, finality that stalls) stays on the double in tests/anchor/test_anchoring.py.
"""

from __future__ import annotations

import json
import logging
import secrets
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from anchor import thor
from anchor.anchoring import (
    Anchorer,
    AnchorError,
    AnchorState,
    AnchorStore,
    StepReport,
    TxStatus,
    anchor_detail,
    anchor_status,
    anchor_txs,
    find_anchor,
    legacy_coef_for,
    node_status,
)
from anchor.evidence import EvidenceLog
from anchor.service import AnchorService, anchor_views
from anchor.thor_client import NodeUnreachable, ThorClient
from anchor.thor_reader import AnchorVerificationError, verify_anchor
from fieldproof.cli import cli
from fieldproof.config import load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.anchor_record import AnchorRecord
from tests.support import anchoring as rig
from tests.support import thor_solo
from tests.support.anchoring import (
    ORIGIN,
    Clock,
    Log,
    collector_config,
    grow_log,
    make_anchorer,
    ok,
)
from tests.support.thor_solo import (
    DEV_KEYS,
    REVERT_RUNTIME,
    STORE_RUNTIME,
    SoloChain,
    deploy,
    drive_to,
    finalize,
)

pytestmark = pytest.mark.integration

KEY = thor.SecretKey(DEV_KEYS[1])
SPONSOR = thor.SecretKey(DEV_KEYS[4])


chain, client = thor_solo.chain, thor_solo.client  # the rig's fixtures, bound by name


store, log, clock = rig.store, rig.log, rig.clock  # the rig's fixtures, bound by name


#: this module's anchorer: KEY's, on the node, with the test's store, log and clock
make = partial(make_anchorer, key=KEY)


# ---------------------------------------------------------------------------- happy path


def test_pending_included_finalized(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    assert ok(a.step()) == StepReport()  # nothing to anchor yet
    cp = log.publish(10)

    built_on = client.best_block()
    r = ok(a.step())
    assert r.created == [1] and len(r.submitted) == 1
    (row,) = anchor_status(store)
    assert row.state is AnchorState.PENDING and row.tx_id == r.submitted[0]

    r = ok(a.step())  # on demand the node packed it when it took it
    assert r.included == [1] and r.finalized == [] and r.submitted == []
    row = store.get(1)
    assert row.state is AnchorState.INCLUDED
    receipt = client.receipt(row.tx_id or "")
    assert receipt is not None and not receipt.reverted
    assert (row.block_number, row.block_id) == (receipt.block_number, receipt.block_id)
    assert row.gas_payer == KEY.address_hex

    finalize(client)
    r = ok(a.step())
    assert r.finalized == [1]
    row = store.get(1)
    assert row.state is AnchorState.FINALIZED
    assert row.finalized_at == clock.now
    assert row.genesis_id == client.genesis().id

    # the tx is exactly the anchor: one clause, value 0, to self, data = record, intrinsic gas
    got = client.raw_transaction(row.tx_id or "")
    assert got is not None
    tx = thor.decode(got[0])
    assert tx.tx_type == thor.TYPE_DYNAMIC_FEE
    assert tx.chain_tag == client.chain_tag()
    assert tx.expiration == 720
    assert not tx.delegated
    (clause,) = tx.clauses
    assert clause.to == KEY.address
    assert clause.value == 0
    assert clause.data == AnchorRecord.for_checkpoint(cp.origin, cp.size, cp.root_hash).encode()
    assert tx.gas == tx.intrinsic_gas()
    assert tx.block_ref_number >= built_on.number

    v = verify_anchor(
        client, row.tx_id or "", ORIGIN, 10, cp.root_hash, genesis_id=client.genesis().id
    )
    assert v.finalized and v.block_number == row.block_number and v.sender == KEY.address_hex

    assert ok(a.step()) == StepReport()  # same checkpoint: never anchored twice
    assert len(anchor_txs(store, 1)) == 1


def test_newest_checkpoint_goes_next(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    log.publish(1)
    ok(a.step())
    log.publish(2)
    cp3 = log.publish(3)
    r = ok(a.step())
    assert r.included == [1]
    assert r.created == [2]
    assert store.get(2).tree_size == 3  # size 2 was superseded before its turn
    assert ok(a.step()).included == [2]
    assert find_anchor(store, ORIGIN, 3, cp3.root_hash) == store.get(2)
    assert sorted(x.tree_size for x in anchor_status(store)) == [1, 3]


def test_legacy_tx_and_custom_recipient(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    to = "0x" + secrets.token_bytes(20).hex()  # an account with no code
    base, legacy_base = client.next_base_fee(), client.legacy_base_gas_price()
    assert base is not None
    # at coef 10 the price is below solo's base fee (both start at 10^13): raised to cover it
    covering = legacy_coef_for(-(-base * 9 // 8), legacy_base)
    assert covering is not None and covering > 10
    a = make(
        store, client, log, clock, dynamic_fee=False, gas_price_coef=10, to=to, gas_margin=1000
    )
    log.publish(5)
    tx_id = ok(a.step()).submitted[0]
    tx = thor.decode(store.get_tx(tx_id).raw)
    assert tx.tx_type == thor.TYPE_LEGACY
    assert tx.gas_price_coef == covering
    assert tx.clauses[0].to == bytes.fromhex(to[2:])
    assert tx.gas == tx.intrinsic_gas() + 1000
    assert ok(a.step()).included == [1]
    receipt = client.receipt(tx_id)
    assert receipt is not None and not receipt.reverted and receipt.tx_type is None


def test_min_interval_between_anchors(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock, min_interval_s=600)
    log.publish(1)
    ok(a.step())
    ok(a.step())
    log.publish(2)
    assert ok(a.step()).created == []
    clock.now += 600
    assert ok(a.step()).created == [2]


class LosesResponses(ThorClient):
    """Posts reach the node but the answer is lost: the anchorer cannot know the tx arrived."""

    lose = 1

    def send_raw(self, raw: bytes) -> str:
        tx_id = super().send_raw(raw)
        if self.lose:
            self.lose -= 1
            raise NodeUnreachable(self.base_url, 1, "ReadTimeout")
        return tx_id


def test_lost_response_does_not_duplicate(
    store: AnchorStore, chain: SoloChain, log: Log, clock: Clock
) -> None:
    with LosesResponses(chain.url, retries=0, sleep=lambda s: None) as c:
        a = make(store, c, log, clock)
        log.publish(1)
        r = a.step()
        assert not r.node_ok
        (t,) = anchor_txs(store, 1)
        assert t.status is TxStatus.UNKNOWN
        r = ok(a.step())  # the node has it in a block: found, not sent again as a new tx
        assert r.included == [1]
    assert [(x.tx_id, x.status) for x in anchor_txs(store, 1)] == [(t.tx_id, TxStatus.INCLUDED)]
    receipt = chain.client.receipt(t.tx_id)
    assert receipt is not None and receipt.block_number == store.get(1).block_number


# ---------------------------------------------------------------------------- energy and sponsor


def test_insufficient_energy_then_vip191_sponsor(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    poor = thor.SecretKey(secrets.token_bytes(32))  # a fresh account: no VTHO at all
    assert client.energy(poor.address) == 0
    a = make(store, client, log, clock, key=poor, retry_base_s=30)
    log.publish(7)
    r = a.step()
    assert r.node_ok
    assert r.submitted == []
    assert "insufficient energy" in r.errors[0]
    assert poor.address_hex in r.errors[0]
    row = store.get(1)
    assert row.state is AnchorState.PENDING
    assert row.failures == 1
    assert row.last_error is not None and "VIP-191 sponsor" in row.last_error
    assert [t.status for t in anchor_txs(store, 1)] == [TxStatus.REJECTED]

    assert ok(a.step()) == StepReport()  # backing off: nothing posted
    assert len(anchor_txs(store, 1)) == 1
    clock.now += 30
    assert "insufficient energy" in a.step().errors[0]  # retried, still broke
    assert store.get(1).failures == 2

    # the operator configures a sponsor and restarts the anchorer on the same store
    a.close()
    sponsor_energy = client.energy(SPONSOR.address)
    b = make(store, client, log, clock, key=poor, sponsor=SPONSOR, retry_base_s=30)
    assert ok(b.step()) == StepReport()  # still backing off (60 s after 2 failures)
    clock.now += 60
    r = ok(b.step())
    assert len(r.submitted) == 1
    assert thor.decode(store.get_tx(r.submitted[0]).raw).delegated
    assert ok(b.step()).included == [1]
    row = store.get(1)
    assert row.gas_payer == SPONSOR.address_hex
    assert row.last_error is None
    assert row.failures == 0
    assert client.energy(poor.address) == 0
    assert client.energy(SPONSOR.address) < sponsor_energy
    receipt = client.receipt(row.tx_id or "")
    assert receipt is not None
    assert receipt.tx_origin == poor.address_hex and receipt.gas_payer == SPONSOR.address_hex


def test_keys_never_reach_logs_or_status(
    store: AnchorStore,
    chain: SoloChain,
    client: ThorClient,
    log: Log,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = thor.SecretKey(secrets.token_bytes(32))  # broke first, funded later
    a = make(store, client, log, clock, key=key)
    log.publish(1)
    r = a.step()
    assert "insufficient energy" in r.errors[0]
    chain.fund(key.address)
    clock.now += 10
    ok(a.step())
    ok(a.step())
    finalize(client)
    ok(a.step())
    secret = key.secret_bytes().hex()
    texts = [rec.getMessage() for rec in caplog.records] + r.errors + [repr(a.key), repr(a)]
    texts += [str(row.to_dict()) for row in anchor_status(store)]
    assert texts
    assert all(secret not in t for t in texts)
    assert store.get(1).state is AnchorState.FINALIZED


# ---------------------------------------------------------------------------- expiry


class SlowPoster(ThorClient):
    """The chain moves on between reading the best block and posting the tx."""

    def __init__(self, url: str, blocks_before_post: int) -> None:
        super().__init__(url, retries=0)
        self.blocks_before_post = blocks_before_post

    def send_raw(self, raw: bytes) -> str:
        if self.blocks_before_post:
            target = self.best_block().number + self.blocks_before_post
            self.blocks_before_post = 0
            drive_to(self, target)
        return super().send_raw(raw)


def test_node_refusing_expired_tx_triggers_rebuild(
    store: AnchorStore, chain: SoloChain, log: Log, clock: Clock
) -> None:
    with SlowPoster(chain.url, 2) as c:
        a = make(store, c, log, clock, expiration=2, retry_base_s=300)
        log.publish(1)
        r = a.step()
        assert r.node_ok
        assert r.submitted == []
        assert "tx rejected: expired" in r.errors[0]
        (t,) = anchor_txs(store, 1)
        assert t.status is TxStatus.EXPIRED
        r = ok(a.step())  # no backoff for expiry: rebuilt at once on a fresh blockRef
        assert len(r.rebuilt) == 1
        assert r.rebuilt == r.submitted
        assert ok(a.step()).included == [1]


# ---------------------------------------------------------------------------- restart, store


def test_restart_resumes_from_the_store(
    tmp_path: Path, chain: SoloChain, client: ThorClient, log: Log, clock: Clock
) -> None:
    path = tmp_path / "anchors.db"
    with AnchorStore(path) as s1, make(s1, client, log, clock) as a:
        log.publish(9)
        tx_id = ok(a.step()).submitted[0]
    with AnchorStore(path) as s2, ThorClient(chain.url, retries=0) as c2:
        b = make(s2, c2, log, clock)
        r = ok(b.step())
        assert r.included == [1]
        assert r.created == []
        assert r.submitted == []
        finalize(c2)
        assert ok(b.step()).finalized == [1]
        assert s2.get(1).tx_id == tx_id
        assert len(anchor_txs(s2, 1)) == 1


def test_one_anchorer_per_store(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    with pytest.raises(AnchorError, match="another anchorer is running"):
        make(store, client, log, clock)
    a.close()
    make(store, client, log, clock).close()


def test_log_going_backwards_is_reported_not_anchored(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    cp = log.publish(10)
    ok(a.step())
    ok(a.step())
    log.publish(8)
    r = a.step()
    assert r.created == []
    assert "went backwards or forked" in r.errors[0]
    log.publish(10, bytes(b ^ 0xFF for b in cp.root_hash))  # same size, other root: a fork
    r = a.step()
    assert r.created == []
    assert "forked" in r.errors[0]
    assert len(anchor_status(store)) == 1


def test_accepts_the_logs_checkpoint_type(
    store: AnchorStore, client: ThorClient, clock: Clock
) -> None:
    from fieldproof.formats.checkpoint import Checkpoint as LogCheckpoint

    root = secrets.token_bytes(32)

    class Source:
        def latest_checkpoint(self) -> tuple[LogCheckpoint, bytes]:
            return LogCheckpoint(ORIGIN, 3, root), b"signed note"

    with Anchorer(store, client, Source(), KEY, clock=clock) as a:
        assert ok(a.step()).created == [1]
        assert ok(a.step()).included == [1]
    assert store.get(1).record == AnchorRecord.for_checkpoint(ORIGIN, 3, root).encode()


# ---------------------------------------------------------------------------- finality


class RecordsReceipts(ThorClient):
    """Records the ``head`` of every receipt read."""

    def __init__(self, url: str) -> None:
        super().__init__(url, retries=0)
        self.heads: list[str | None] = []

    def receipt(self, tx_id: str | bytes, *, head: str | bytes | None = None) -> Any:
        self.heads.append(None if head is None else str(head))
        return super().receipt(tx_id, head=head)


def test_final_is_the_receipt_read_from_the_finalized_block(
    store: AnchorStore, chain: SoloChain, log: Log, clock: Clock
) -> None:
    c = RecordsReceipts(chain.url)
    with closing(c):
        a = make(store, c, log, clock)
        log.publish(2)
        ok(a.step())
        r = ok(a.step())
        assert r.included == [1]
        gap = r.not_final[1]
        assert not gap.final and gap.block_number == store.get(1).block_number
        assert "not final yet" in gap.explain()
        detail = anchor_detail(store.get(1), node_status(store))
        assert detail is not None and f"best #{gap.best_number}" in detail

        finalize(c)
        c.heads.clear()
        r = ok(a.step())
        assert r.finalized == [1] and r.not_final == {}
        # final = the receipt read from the finalized block: one consistent answer
        assert c.heads == [c.finalized_block().id]
        assert anchor_detail(store.get(1), node_status(store)) is None


# ---------------------------------------------------------------------------- fees


def test_dynamic_fee_follows_the_next_base_fee(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    base = client.next_base_fee()
    priority = client.priority_fee()
    assert base is not None
    a = make(store, client, log, clock)
    log.publish(1)
    tx = thor.decode(store.get_tx(ok(a.step()).submitted[0]).raw)
    assert tx.tx_type == thor.TYPE_DYNAMIC_FEE
    assert tx.max_priority_fee_per_gas == priority
    assert tx.max_fee_per_gas == 2 * base + priority
    assert ok(a.step()).included == [1]


# ---------------------------------------------------------------------------- contract `to`


def test_contract_to_gets_its_execution_gas(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    to = deploy(client, STORE_RUNTIME)
    a = make(store, client, log, clock, to="0x" + to.hex())
    log.publish(1)
    tx = thor.decode(store.get_tx(ok(a.step()).submitted[0]).raw)
    assert ok(a.step()).included == [1]
    receipt = client.receipt(store.get(1).tx_id or "")
    assert receipt is not None and not receipt.reverted
    # the simulated execution plus the margin: what it used, and 15,000 to spare
    assert receipt.gas_used > tx.intrinsic_gas()
    assert tx.gas == receipt.gas_used + 15_000


def test_contract_to_that_reverts_is_refused_before_sending(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    to = deploy(client, REVERT_RUNTIME)
    a = make(store, client, log, clock, to="0x" + to.hex(), retry_base_s=30)
    log.publish(1)
    r = a.step()
    assert r.node_ok and r.submitted == []
    assert "reverts when the node simulates it" in r.errors[0]
    assert anchor_txs(store, 1) == []
    row = store.get(1)
    assert row.state is AnchorState.PENDING and row.failures == 1
    assert anchor_detail(row, node_status(store)) == row.last_error
    assert ok(a.step()) == StepReport()  # backing off
    assert anchor_txs(store, 1) == []


# ---------------------------------------------------------------------------- verification


def test_verify_anchor_refuses_what_does_not_match(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    cp = log.publish(6)
    tx_id = ok(a.step()).submitted[0]
    with pytest.raises(AnchorVerificationError, match="not finalized yet"):
        verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash)
    assert not verify_anchor(
        client, tx_id, ORIGIN, 6, cp.root_hash, require_finalized=False
    ).finalized
    finalize(client)
    with pytest.raises(AnchorVerificationError, match="no anchor record"):
        verify_anchor(client, tx_id, ORIGIN, 7, cp.root_hash)
    with pytest.raises(AnchorVerificationError, match="no anchor record"):
        verify_anchor(client, tx_id, "other.example/log", 6, cp.root_hash)
    with pytest.raises(AnchorVerificationError, match="genesis"):
        verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash, genesis_id="0x" + "00" * 32)
    with pytest.raises(AnchorVerificationError, match="not on this node's chain"):
        verify_anchor(client, "0x" + secrets.token_bytes(32).hex(), ORIGIN, 6, cp.root_hash)
    assert verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash).finalized


# ---------------------------------------------------------------------------- the service


def test_thor_anchor_service(tmp_path: Path, chain: SoloChain, client: ThorClient) -> None:
    """`fieldproof anchor run/status` over a real collector database: checkpoints signed by
    the collector are anchored on the node, finalized by its finality, and shown."""
    cfg_path = collector_config(
        tmp_path, KEY.secret_bytes().hex(), f'chain = "thor"\nurl = "{chain.url}"\n'
    )
    size = grow_log(cfg_path, 10)
    service = AnchorService(load_collector_config(cfg_path))
    assert service.step()  # posted (and packed, on demand)
    assert service.step()  # seen included
    finalize(client)
    assert service.step()  # finalized
    size2 = grow_log(cfg_path, 5)
    assert service.step()
    assert service.step()
    finalize(client)
    assert service.step()
    service.close()
    views = anchor_views(load_collector_config(cfg_path))
    assert [(v.tree_size, v.state) for v in views] == [(size, "finalized"), (size2, "finalized")]
    assert all(v.network == client.genesis().id for v in views)
    # the record on chain is the checkpoint's
    cfg = load_collector_config(cfg_path)
    db = open_db(cfg.db_path)
    latest = EvidenceLog.open(db, cfg.log_origin, None).latest()
    db.close()
    assert latest is not None
    assert views[-1].root_hash == latest.checkpoint.root_hash.hex()
    v = verify_anchor(
        client, views[-1].tx_id or "", cfg.log_origin, size2, latest.checkpoint.root_hash
    )
    assert v.finalized and v.sender == KEY.address_hex

    # the collector reports anchoring progress for the Integrity dashboard and its alert
    from collector.service import Collector

    collector = Collector(load_collector_config(cfg_path))
    state = [p for p in collector.stats_points() if p.measurement == "anchor_state"]
    collector.db.close()
    assert len(state) == 1 and state[0].tags["chain"] == "thor"
    assert state[0].fields["finalized_size"] == size2 == state[0].fields["log_size"]
    assert state[0].fields["pending"] == 0

    result = CliRunner().invoke(cli, ["anchor", "status", "--config", str(cfg_path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [r["state"] for r in shown] == ["finalized", "finalized"]
