"""The anchorer where the real node cannot go: the Thor node double (tests/support/thornode.py).

Every ordinary path (pending, included, finalized, sponsor, legacy, expiry, restart, contract
``to``, verification) runs on a real thor solo node in tests/integration/test_anchoring_real.py
and test_thor_real.py. Here: outages, lost and dropped txs, reverts after a passing simulation,
reorgs, another network, a lagging node, base fees set at will, finality that stalls, and the
checks that need no node at all (keys, config). Each test's docstring says which. Time (backoff,
node sync) is an injected clock; blocks are produced on demand: no test waits or times.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from anchor import thor
from anchor.anchoring import (
    AnchorConfig,
    AnchorError,
    AnchorState,
    AnchorStore,
    ChainMismatch,
    KeyLoadError,
    StepReport,
    TxStatus,
    anchor_detail,
    anchor_status,
    anchor_txs,
    generate_key_file,
    key_from_env,
    legacy_coef_for,
    load_key,
    load_key_file,
    node_status,
    retry_failed,
    run_forever,
)
from anchor.thor_client import ThorClient
from anchor.thor_reader import AnchorVerificationError, verify_anchor
from tests.support import anchoring as rig
from tests.support.anchoring import ORIGIN, Clock, Log, make_anchorer, ok
from tests.support.thornode import ThorNode, funded

KEY = thor.SecretKey(
    bytes.fromhex("7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a")
)
SPONSOR = thor.SecretKey(
    bytes.fromhex("321d6443bc6177273b5abf54210fe806d451d6b7973bccc2384ef78bbcd0bf51")
)


@pytest.fixture
def node(shared_dir: Path) -> Iterator[ThorNode]:
    assert (shared_dir / "reference" / "thor-rest-api.yaml").is_file()
    with ThorNode(finality_depth=3, energy=funded(KEY.address, SPONSOR.address)) as n:
        yield n


@pytest.fixture
def client(node: ThorNode) -> Iterator[ThorClient]:
    with ThorClient(node.url, retries=1, sleep=lambda s: None) as c:
        yield c


store, log, clock = rig.store, rig.log, rig.clock  # the rig's fixtures, bound by name


#: this module's anchorer: KEY's, on the double, with the test's store, log and clock
make = partial(make_anchorer, key=KEY)


# ---------------------------------------------------------------------------- happy path


# ---------------------------------------------------------------------------- node outages


def test_node_down_for_a_while_loses_nothing(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: an unreachable node (connections refused) and its return, on demand."""
    a = make(store, client, log, clock)
    log.publish(1)
    tx_id = ok(a.step()).submitted[0]

    node.go_down()
    for _ in range(3):
        r = a.step()
        assert not r.node_ok
        assert "unreachable" in r.errors[0]
        clock.now += 60
    log.publish(2)  # the log moves on while the node is away
    assert not a.step().node_ok
    assert [x.state for x in anchor_status(store)] == [AnchorState.PENDING]

    node.come_up()
    node.mine()
    r = ok(a.step())
    assert r.included == [1]
    assert r.created == [2]
    assert store.get(1).tx_id == tx_id
    node.mine(4)
    r = ok(a.step())
    assert sorted(r.finalized) == [1, 2]
    assert {x.tree_size for x in anchor_status(store, state=AnchorState.FINALIZED)} == {1, 2}


def test_down_before_first_contact(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node that refuses connections before the anchorer ever reached it."""
    log.publish(1)
    node.go_down()
    a = make(store, client, log, clock)
    r = a.step()
    assert not r.node_ok
    assert r.created == []
    node.come_up()
    assert ok(a.step()).created == [1]


def test_node_forgetting_a_tx_gets_it_again(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a restarted node whose pool lost a pending tx (an on-demand thor packs it at
    once, so it never holds one)."""
    a = make(store, client, log, clock)
    log.publish(1)
    tx_id = ok(a.step()).submitted[0]
    assert node.drop_pending() == 1
    assert ok(a.step()).submitted == [tx_id]
    node.mine()
    assert ok(a.step()).included == [1]


# ---------------------------------------------------------------------------- energy and sponsor


# ---------------------------------------------------------------------------- expiry, revert, reorg


def test_expired_tx_is_rebuilt(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node that says yes to a tx and loses it, until the tx expires (thor packs
    every tx it accepts)."""
    a = make(store, client, log, clock, expiration=5)
    node.drop_incoming = True  # the node says yes and loses it
    log.publish(3)
    first = ok(a.step()).submitted[0]
    node.mine(4)  # best 4: block 5 = blockRef 0 + 5 may still include it
    r = ok(a.step())
    assert r.rebuilt == []
    assert r.submitted == [first]
    node.drop_incoming = False
    node.mine()  # best 5: the next block, 6, is past 0 + 5
    r = ok(a.step())
    assert len(r.rebuilt) == 1
    assert r.rebuilt == r.submitted
    second = r.rebuilt[0]
    assert second != first
    assert thor.decode(store.get_tx(second).raw).block_ref_number == 5
    node.mine()
    assert ok(a.step()).included == [1]
    assert [(t.tx_id, t.status) for t in anchor_txs(store, 1)] == [
        (first, TxStatus.EXPIRED),
        (second, TxStatus.INCLUDED),
    ]


def test_reverted_tx_fails_with_reason_and_can_be_retried(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a clause that passes the node's simulation and then reverts in its block, and
    stops reverting on command (no real contract does that on demand)."""
    a = make(store, client, log, clock)
    node.revert_to.add(KEY.address)
    log.publish(4)
    ok(a.step())
    node.mine()
    r = ok(a.step())
    assert r.failed == [1]
    assert r.included == []
    row = store.get(1)
    assert row.state is AnchorState.FAILED
    assert row.failure_reason is not None
    assert "reverted in block 1" in row.failure_reason
    assert ok(a.step()) == StepReport()  # a failed anchor is not retried on its own

    assert retry_failed(store, 1, now=clock.now).state is AnchorState.PENDING
    with pytest.raises(AnchorError, match="only failed"):
        retry_failed(store, 1)
    node.revert_to.clear()
    r = ok(a.step())
    assert len(r.submitted) == 1
    node.mine()
    assert ok(a.step()).included == [1]


def test_reorg_sends_an_anchor_back_to_pending(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a reorg of an unfinalized block (solo has no other producer to fork with)."""
    a = make(store, client, log, clock)
    log.publish(1)
    tx_id = ok(a.step()).submitted[0]
    node.mine()
    assert ok(a.step()).included == [1]
    node.rollback(1)
    r = ok(a.step())
    assert r.reorged == [1]
    assert store.get(1).state is AnchorState.PENDING
    assert store.get(1).block_id is None
    node.mine()
    assert ok(a.step()).included == [1]
    assert store.get(1).tx_id == tx_id


# ---------------------------------------------------------------------------- restart


def test_store_refuses_another_chain(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node on another network (every thor solo runs the same devnet genesis)."""
    with make(store, client, log, clock) as first:
        ok(first.step())
    with (
        ThorNode(chain_tag=(node.chain_tag + 1) % 256) as other,
        ThorClient(other.url, retries=0) as c,
        pytest.raises(ChainMismatch) as exc,
    ):
        make(store, c, log, clock).step()
    assert node.genesis_id in str(exc.value)
    assert "right network" in str(exc.value)


# ---------------------------------------------------------------------------- verification


def test_verify_anchor_of_a_tx_not_yet_in_a_block(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a tx the node holds in its pool but not in a block (on demand, thor packs it
    before it answers). The rest of verify_anchor runs on the real node in
    tests/integration/test_anchoring_real.py."""
    a = make(store, client, log, clock)
    cp = log.publish(6)
    tx_id = ok(a.step()).submitted[0]
    with pytest.raises(AnchorVerificationError, match="not in a block"):
        verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash)
    node.mine(4)
    assert verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash).finalized


# ---------------------------------------------------------------------------- keys


def test_key_file_must_be_private(tmp_path: Path) -> None:
    p = tmp_path / "anchor.key"
    p.write_text(KEY.secret_bytes().hex() + "\n")
    p.chmod(0o644)
    with pytest.raises(KeyLoadError) as exc:
        load_key_file(p)
    assert "chmod 600" in str(exc.value)
    assert KEY.secret_bytes().hex() not in str(exc.value)
    p.chmod(0o600)
    assert load_key_file(p).address == KEY.address
    assert load_key(path=p) == KEY
    p.write_text("0x" + KEY.secret_bytes().hex())
    assert load_key_file(p) == KEY
    p.write_bytes(KEY.secret_bytes())
    assert load_key_file(p) == KEY


def test_bad_key_material_is_not_echoed(tmp_path: Path) -> None:
    p = tmp_path / "anchor.key"
    secretish = "not-a-key-but-private-0123456789"
    p.write_text(secretish)
    p.chmod(0o600)
    with pytest.raises(KeyLoadError) as exc:
        load_key_file(p)
    assert secretish not in str(exc.value)
    assert "64 hex characters" in str(exc.value)
    with pytest.raises(KeyLoadError, match="does not exist"):
        load_key_file(tmp_path / "missing.key")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDPROOF_ANCHOR_KEY", KEY.secret_bytes().hex())
    assert key_from_env() == KEY
    assert load_key() == KEY
    monkeypatch.setenv("FIELDPROOF_ANCHOR_KEY", "zz")
    with pytest.raises(KeyLoadError) as exc:
        key_from_env()
    assert "FIELDPROOF_ANCHOR_KEY" in str(exc.value)
    assert "zz" not in str(exc.value)
    monkeypatch.delenv("FIELDPROOF_ANCHOR_KEY")
    with pytest.raises(KeyLoadError, match="not set"):
        key_from_env()


def test_generate_key_file(tmp_path: Path) -> None:
    p = tmp_path / "new.key"
    k = generate_key_file(p)
    assert (os.stat(p).st_mode & 0o777) == 0o600
    assert load_key_file(p) == k
    with pytest.raises(KeyLoadError, match="already exists"):
        generate_key_file(p)


# ---------------------------------------------------------------------------- service loop


class CountingStop(threading.Event):
    """Stops the loop after ``n`` waits and records the delays asked for."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) >= self.n:
            self.set()
        return self.is_set()


def test_run_forever_backs_off_while_the_node_is_down(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: an unreachable node, for the service loop's backoff."""
    a = make(store, client, log, clock)
    log.publish(1)
    node.go_down()
    stop = CountingStop(4)
    run_forever(a, stop, interval_s=10, max_backoff_s=50)
    assert stop.waits == [20, 40, 50, 50]
    node.come_up()
    stop = CountingStop(1)
    run_forever(a, stop, interval_s=10)
    assert stop.waits == [10]
    assert store.get(1).state is AnchorState.PENDING


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="expiration"):
        AnchorConfig(expiration=0)
    with pytest.raises(ValueError, match="20-byte"):
        AnchorConfig(to="0x1234")


# ---------------------------------------------------------------------------- finality


def test_no_finality_deadline(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a network whose finality stalls (solo always finalizes). The anchor stays
    included, explained, never failed."""
    node.finality_depth = 10_000
    a = make(store, client, log, clock)
    log.publish(1)
    ok(a.step())
    node.mine(400)  # far past where a healthy network would have finalized block 1 (540)
    clock.now += 7 * 86400
    node.mine(200)
    r = ok(a.step())
    assert store.get(1).state is AnchorState.INCLUDED
    gap = r.not_final[1]
    assert gap.expected_at_best == 540 and gap.best_number == 600
    assert "is not: the network is not finalizing" in gap.explain()


# ---------------------------------------------------------------------------- node sync


def test_anchoring_pauses_while_the_node_is_not_synced(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node lagging by an exact number of seconds, by its clock and ours (the real
    pause is shown in tests/integration/test_thor_real.py, at the cost of a node that waits)."""
    a = make(store, client, log, clock)
    log.publish(1)
    best_time = node.node_time
    node.lag_s = 61.0  # by its own clock, the node's head is 61 s old
    clock.now = best_time + 61.0  # and by ours
    r = a.step()
    assert not r.node_ok
    assert r.created == [] and r.submitted == []
    assert r.paused is not None and r.errors == [r.paused]
    assert "not synced" in r.paused and "best block #0 is 61 s old" in r.paused
    assert "paused" in r.paused
    status = node_status(store)
    assert status is not None and not status.synced and status.reason == r.paused
    assert node.submissions == []

    node.lag_s = 59.0  # the node caught up (its head is now less than 6 intervals old)
    r = ok(a.step())
    assert r.created == [1] and len(r.submitted) == 1
    status = node_status(store)
    assert status is not None and status.synced


def test_a_stale_head_by_only_one_clock_is_not_a_pause(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node whose clock disagrees with ours (a real node's Date is the host's clock).
    Both our clock and the node's must say the head is old: a node whose own clock is
    behind ours is not judged by our clock alone, and the other way round."""
    a = make(store, client, log, clock)
    log.publish(1)
    clock.now = node.node_time + 3600  # our clock far ahead; the node says its head is fresh
    assert ok(a.step()).created == [1]
    node.lag_s = 3600  # the node's clock ahead; ours says the head is fresh
    clock.now = node.node_time - 3600
    assert ok(a.step()).paused is None


def test_pending_anchor_detail_names_the_pause(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node that stops being synced while an anchor is pending."""
    a = make(store, client, log, clock)
    log.publish(1)
    ok(a.step())
    node.lag_s = 600.0
    clock.now = node.node_time
    assert a.step().paused
    detail = anchor_detail(store.get(1), node_status(store))
    assert detail is not None and detail.startswith("node not synced")


# ---------------------------------------------------------------------------- network


def test_node_replaced_by_another_network_mid_run(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a node replaced by one of another network on the same port mid-run."""
    a = make(store, client, log, clock)
    log.publish(1)
    ok(a.step())
    assert node.genesis_headers[-1] == node.genesis_id  # every request names the network
    port = int(node.url.rsplit(":", 1)[1])
    node.go_down()
    with ThorNode(chain_tag=(node.chain_tag + 1) % 256, port=port) as other:
        with pytest.raises(ChainMismatch) as exc:
            a.step()
        assert node.genesis_id in str(exc.value) and other.genesis_id in str(exc.value)
        assert other.submissions == []  # nothing was sent to the wrong network
        assert other.genesis_headers == [node.genesis_id]


# ---------------------------------------------------------------------------- fees


def test_legacy_price_covers_a_risen_base_fee(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a base fee set to an exact value (the real node's rises only by burning gas;
    tests/integration/test_thor_real.py shows that once). At the floor (coef 0) a legacy tx
    pays the legacy base price; once the base fee is above it, the node refuses such a tx, so
    the anchorer raises the coefficient to cover it."""
    node.legacy_base_gas_price = 10**13
    node.base_fee = 13 * 10**12
    a = make(store, client, log, clock, dynamic_fee=False, gas_price_coef=0)
    log.publish(1)
    r = ok(a.step())
    tx = thor.decode(store.get_tx(r.submitted[0]).raw)
    assert tx.tx_type == thor.TYPE_LEGACY
    want = legacy_coef_for(-(-node.base_fee * 9 // 8), 10**13)
    assert want is not None and tx.gas_price_coef == want > 0
    price = 10**13 + 10**13 * tx.gas_price_coef // 255
    assert price >= node.base_fee * 9 // 8
    node.mine()
    assert ok(a.step()).included == [1]


def test_legacy_falls_back_to_dynamic_fee_past_twice_the_legacy_price(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a base fee above twice the legacy price (hundreds of full blocks on a real node)."""
    node.legacy_base_gas_price = 10**13
    node.base_fee = 25 * 10**12  # above 2 x: no gasPriceCoef can pay it
    a = make(store, client, log, clock, dynamic_fee=False)
    log.publish(1)
    tx = thor.decode(store.get_tx(ok(a.step()).submitted[0]).raw)
    assert tx.tx_type == thor.TYPE_DYNAMIC_FEE
    assert tx.max_fee_per_gas >= node.base_fee


def test_legacy_coef_for() -> None:
    assert legacy_coef_for(10**13, 10**13) == 0
    assert legacy_coef_for(10**13 + 1, 10**13) == 1
    assert legacy_coef_for(2 * 10**13, 10**13) == 255
    assert legacy_coef_for(2 * 10**13 + 1, 10**13) is None
    assert legacy_coef_for(10**15, 0) is None
    for price in (10**13 + 7, 15 * 10**12, 19_999_999_999_999):
        coef = legacy_coef_for(price, 10**13)
        assert coef is not None
        assert 10**13 + 10**13 * coef // 255 >= price
        assert coef == 0 or 10**13 + 10**13 * (coef - 1) // 255 < price


class RaisesBaseFee(ThorClient):
    """The base fee jumps between building the tx and posting it."""

    def __init__(self, node: ThorNode) -> None:
        super().__init__(node.url, retries=0)
        self.node = node
        self.jumps = 1

    def send_raw(self, raw: bytes) -> str:
        if self.jumps:
            self.jumps -= 1
            self.node.base_fee *= 4
        return super().send_raw(raw)


def test_fee_too_low_is_rebuilt_on_the_new_fee_at_once(
    store: AnchorStore, node: ThorNode, log: Log, clock: Clock
) -> None:
    """Double: a base fee that jumps between building a tx and posting it."""
    with RaisesBaseFee(node) as c:
        a = make(store, c, log, clock, retry_base_s=600)
        log.publish(1)
        r = a.step()
        assert r.node_ok and r.submitted == []
        assert "gas price is less than block base fee" in r.errors[0]
        (t,) = anchor_txs(store, 1)
        assert t.status is TxStatus.REJECTED
        r = ok(a.step())  # no backoff: the next build reads the new base fee
        assert len(r.submitted) == 1
        assert thor.decode(store.get_tx(r.submitted[0]).raw).max_fee_per_gas >= node.base_fee
        node.mine()
        assert ok(a.step()).included == [1]


# ---------------------------------------------------------------------------- contract `to`

