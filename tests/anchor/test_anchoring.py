"""Anchorer end to end against the Thor node test double (tests/support/thornode.py).

The double stands in for what a real node cannot be made to do on demand (finality in a few
blocks, outages, lost answers, reorgs, a node that lags); the same anchorer runs against a real
thor solo node in tests/integration/test_thor_real.py. Time (backoff, node sync) is an injected
clock; blocks are produced on demand: no test waits or times.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from anchor import thor
from anchor.anchoring import (
    AnchorConfig,
    Anchorer,
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
    find_anchor,
    generate_key_file,
    key_from_env,
    legacy_coef_for,
    load_key,
    load_key_file,
    node_status,
    retry_failed,
    run_forever,
)
from anchor.thor_client import NodeUnreachable, ThorClient
from anchor.thor_reader import AnchorVerificationError, verify_anchor
from fieldproof.formats.anchor_record import AnchorRecord
from tests.support.thornode import ThorNode, funded

KEY = thor.SecretKey(
    bytes.fromhex("7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a")
)
SPONSOR = thor.SecretKey(
    bytes.fromhex("321d6443bc6177273b5abf54210fe806d451d6b7973bccc2384ef78bbcd0bf51")
)
ORIGIN = "farm.example/fieldproof/log"


@dataclass(frozen=True)
class Checkpoint:
    """Same shape as fieldproof.formats.checkpoint.Checkpoint (written elsewhere)."""

    origin: str
    size: int
    root_hash: bytes


class Log:
    """A checkpoint source whose newest checkpoint the test sets."""

    def __init__(self) -> None:
        self.latest: tuple[Checkpoint, bytes] | None = None

    def publish(self, size: int, root: bytes | None = None) -> Checkpoint:
        cp = Checkpoint(ORIGIN, size, root or bytes([size % 256]) * 32)
        self.latest = (cp, f"{ORIGIN}\n{size}\n...signed note...\n".encode())
        return cp

    def latest_checkpoint(self) -> tuple[Checkpoint, bytes] | None:
        return self.latest


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(shared_dir: Path) -> Iterator[ThorNode]:
    assert (shared_dir / "reference" / "thor-rest-api.yaml").is_file()
    with ThorNode(finality_depth=3, energy=funded(KEY.address, SPONSOR.address)) as n:
        yield n


@pytest.fixture
def client(node: ThorNode) -> Iterator[ThorClient]:
    with ThorClient(node.url, retries=1, sleep=lambda s: None) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AnchorStore]:
    with AnchorStore(tmp_path / "anchors.db") as s:
        yield s


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    store: AnchorStore,
    client: ThorClient,
    log: Log,
    clock: Clock,
    *,
    key: thor.SecretKey = KEY,
    sponsor: thor.SecretKey | None = None,
    **config: Any,
) -> Anchorer:
    return Anchorer(
        store,
        client,
        log,
        key,
        sponsor=sponsor,
        config=AnchorConfig(**config),
        clock=clock,
    )


def ok(report: StepReport) -> StepReport:
    assert report.node_ok, report
    assert not report.errors, report
    return report


# ---------------------------------------------------------------------------- happy path


def test_pending_included_finalized(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    assert ok(a.step()) == StepReport()  # nothing to anchor yet
    cp = log.publish(10)

    r = ok(a.step())
    assert r.created == [1]
    assert len(r.submitted) == 1
    (row,) = anchor_status(store)
    assert row.state is AnchorState.PENDING
    assert row.tx_id == r.submitted[0]
    assert node.pending_ids == [row.tx_id]
    assert ok(a.step()).submitted == []  # waiting, nothing resent

    node.mine()
    r = ok(a.step())
    assert r.included == [1]
    assert r.finalized == []
    row = store.get(1)
    assert row.state is AnchorState.INCLUDED
    assert row.block_number == 1
    assert row.block_id == node.block_id(1)
    assert row.gas_payer == KEY.address_hex

    node.mine(2)  # best 3, finalized 0
    assert ok(a.step()).finalized == []
    node.mine()  # best 4, finalized 1
    r = ok(a.step())
    assert r.finalized == [1]
    row = store.get(1)
    assert row.state is AnchorState.FINALIZED
    assert row.finalized_at == clock.now
    assert row.genesis_id == node.genesis_id

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
    assert tx.block_ref == bytes.fromhex(node.genesis_id[2:18])

    v = verify_anchor(client, row.tx_id or "", ORIGIN, 10, cp.root_hash, genesis_id=node.genesis_id)
    assert v.finalized
    assert v.block_number == 1
    assert v.sender == KEY.address_hex

    assert ok(a.step()) == StepReport()  # same checkpoint: never anchored twice
    assert len(anchor_txs(store, 1)) == 1


def test_newest_checkpoint_goes_next(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    log.publish(1)
    ok(a.step())
    log.publish(2)
    log.publish(3)
    assert ok(a.step()).created == []  # one in flight at a time
    node.mine()
    r = ok(a.step())
    assert r.included == [1]
    assert r.created == [2]
    assert store.get(2).tree_size == 3  # size 2 was superseded before its turn
    node.mine()
    assert ok(a.step()).included == [2]
    assert find_anchor(store, ORIGIN, 3, bytes([3]) * 32) == store.get(2)
    assert find_anchor(store, ORIGIN, 2, bytes([2]) * 32) is None


def test_legacy_tx_and_custom_recipient(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    node.legacy_base_gas_price = 10**15  # mainnet's: far above the base fee, coef 10 is plenty
    to = "0x" + "ab" * 20
    a = make(
        store, client, log, clock, dynamic_fee=False, gas_price_coef=10, to=to, gas_margin=1000
    )
    log.publish(5)
    tx_id = ok(a.step()).submitted[0]
    tx = thor.decode(store.get_tx(tx_id).raw)
    assert tx.tx_type == thor.TYPE_LEGACY
    assert tx.gas_price_coef == 10
    assert tx.clauses[0].to == bytes.fromhex("ab" * 20)
    assert tx.gas == tx.intrinsic_gas() + 1000
    node.mine()
    assert ok(a.step()).included == [1]


def test_min_interval_between_anchors(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock, min_interval_s=600)
    log.publish(1)
    ok(a.step())
    node.mine()
    ok(a.step())
    log.publish(2)
    assert ok(a.step()).created == []
    clock.now += 600
    assert ok(a.step()).created == [2]


# ---------------------------------------------------------------------------- node outages


def test_node_down_for_a_while_loses_nothing(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
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
    log.publish(1)
    node.go_down()
    a = make(store, client, log, clock)
    r = a.step()
    assert not r.node_ok
    assert r.created == []
    node.come_up()
    assert ok(a.step()).created == [1]


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
    store: AnchorStore, node: ThorNode, log: Log, clock: Clock
) -> None:
    with LosesResponses(node.url, retries=0, sleep=lambda s: None) as c:
        a = make(store, c, log, clock)
        log.publish(1)
        r = a.step()
        assert not r.node_ok
        (t,) = anchor_txs(store, 1)
        assert t.status is TxStatus.UNKNOWN
        r = ok(a.step())
        assert r.submitted == [t.tx_id]  # the same bytes again, not a new tx
        node.mine()
        assert ok(a.step()).included == [1]
    assert [x.status for x in anchor_txs(store, 1)] == [TxStatus.INCLUDED]
    assert node.included_in(t.tx_id) == 1


def test_node_forgetting_a_tx_gets_it_again(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    log.publish(1)
    tx_id = ok(a.step()).submitted[0]
    assert node.drop_pending() == 1
    assert ok(a.step()).submitted == [tx_id]
    node.mine()
    assert ok(a.step()).included == [1]


# ---------------------------------------------------------------------------- energy and sponsor


def test_insufficient_energy_then_vip191_sponsor(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    node.set_energy(KEY.address, 0)
    a = make(store, client, log, clock, retry_base_s=30)
    log.publish(7)
    r = a.step()
    assert r.node_ok
    assert r.submitted == []
    assert "insufficient energy" in r.errors[0]
    assert KEY.address_hex in r.errors[0]
    row = store.get(1)
    assert row.state is AnchorState.PENDING
    assert row.failures == 1
    assert row.last_error is not None
    assert "VIP-191 sponsor" in row.last_error
    assert [t.status for t in anchor_txs(store, 1)] == [TxStatus.REJECTED]

    posts = len(node.submissions)
    assert ok(a.step()) == StepReport()  # backing off: nothing posted
    assert len(node.submissions) == posts
    clock.now += 30
    assert "insufficient energy" in a.step().errors[0]  # retried, still broke
    assert store.get(1).failures == 2

    # the operator configures a sponsor and restarts the anchorer on the same store
    a.close()
    sponsor_energy = node.energy(SPONSOR.address)
    b = make(store, client, log, clock, sponsor=SPONSOR, retry_base_s=30)
    assert ok(b.step()) == StepReport()  # still backing off (60 s after 2 failures)
    clock.now += 60
    r = ok(b.step())
    assert len(r.submitted) == 1
    assert thor.decode(store.get_tx(r.submitted[0]).raw).delegated
    node.mine()
    assert ok(b.step()).included == [1]
    row = store.get(1)
    assert row.gas_payer == SPONSOR.address_hex
    assert row.last_error is None
    assert row.failures == 0
    assert node.energy(KEY.address) == 0
    assert node.energy(SPONSOR.address) < sponsor_energy
    receipt = client.receipt(row.tx_id or "")
    assert receipt is not None
    assert receipt.tx_origin == KEY.address_hex


# ---------------------------------------------------------------------------- expiry, revert, reorg


def test_expired_tx_is_rebuilt(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
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


class SlowPoster(ThorClient):
    """The chain moves on between reading the best block and posting the tx."""

    def __init__(self, node: ThorNode, blocks_before_post: int) -> None:
        super().__init__(node.url, retries=0)
        self.node = node
        self.blocks_before_post = blocks_before_post

    def send_raw(self, raw: bytes) -> str:
        self.node.mine(self.blocks_before_post)
        self.blocks_before_post = 0
        return super().send_raw(raw)


def test_node_refusing_expired_tx_triggers_rebuild(
    store: AnchorStore, node: ThorNode, log: Log, clock: Clock
) -> None:
    with SlowPoster(node, 2) as c:
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
        node.mine()
        assert ok(a.step()).included == [1]


def test_reverted_tx_fails_with_reason_and_can_be_retried(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
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


def test_restart_resumes_from_the_store(
    tmp_path: Path, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    path = tmp_path / "anchors.db"
    with AnchorStore(path) as s1, make(s1, client, log, clock) as a:
        log.publish(9)
        tx_id = ok(a.step()).submitted[0]
    node.mine()
    with AnchorStore(path) as s2, ThorClient(node.url, retries=0) as c2:
        b = make(s2, c2, log, clock)
        r = ok(b.step())
        assert r.included == [1]
        assert r.created == []
        assert r.submitted == []
        node.mine(3)
        assert ok(b.step()).finalized == [1]
        assert s2.get(1).tx_id == tx_id
        assert len(anchor_txs(s2, 1)) == 1


def test_store_refuses_another_chain(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
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


def test_one_anchorer_per_store(
    store: AnchorStore, client: ThorClient, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    with pytest.raises(AnchorError, match="another anchorer is running"):
        make(store, client, log, clock)
    a.close()
    make(store, client, log, clock).close()


def test_log_going_backwards_is_reported_not_anchored(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    log.publish(10)
    ok(a.step())
    node.mine()
    ok(a.step())
    log.publish(8)
    r = a.step()
    assert r.created == []
    assert "went backwards or forked" in r.errors[0]
    log.publish(10, b"\xee" * 32)  # same size, other root: a fork
    r = a.step()
    assert r.created == []
    assert "forked" in r.errors[0]
    assert len(anchor_status(store)) == 1


# ---------------------------------------------------------------------------- verification


def test_verify_anchor_refuses_what_does_not_match(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    a = make(store, client, log, clock)
    cp = log.publish(6)
    tx_id = ok(a.step()).submitted[0]
    with pytest.raises(AnchorVerificationError, match="not in a block"):
        verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash)
    node.mine()
    with pytest.raises(AnchorVerificationError, match="not finalized yet"):
        verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash)
    assert not verify_anchor(
        client, tx_id, ORIGIN, 6, cp.root_hash, require_finalized=False
    ).finalized
    node.mine(3)
    with pytest.raises(AnchorVerificationError, match="no anchor record"):
        verify_anchor(client, tx_id, ORIGIN, 7, cp.root_hash)
    with pytest.raises(AnchorVerificationError, match="no anchor record"):
        verify_anchor(client, tx_id, "other.example/log", 6, cp.root_hash)
    with pytest.raises(AnchorVerificationError, match="genesis"):
        verify_anchor(client, tx_id, ORIGIN, 6, cp.root_hash, genesis_id="0x" + "00" * 32)
    with pytest.raises(AnchorVerificationError, match="not on this node's chain"):
        verify_anchor(client, "0x" + "00" * 32, ORIGIN, 6, cp.root_hash)
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


def test_keys_never_reach_logs_or_status(
    store: AnchorStore,
    client: ThorClient,
    node: ThorNode,
    log: Log,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    node.set_energy(KEY.address, 0)
    a = make(store, client, log, clock)
    log.publish(1)
    r = a.step()
    node.set_energy(KEY.address, 10**21)
    clock.now += 10
    a.step()
    node.mine(5)
    a.step()
    secret = KEY.secret_bytes().hex()
    texts = [rec.getMessage() for rec in caplog.records] + r.errors + [repr(a.key), repr(a)]
    texts += [str(row.to_dict()) for row in anchor_status(store)]
    assert texts
    assert all(secret not in t for t in texts)
    assert store.get(1).state is AnchorState.FINALIZED


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


def test_accepts_the_logs_checkpoint_type(
    store: AnchorStore, client: ThorClient, node: ThorNode, clock: Clock
) -> None:
    from fieldproof.formats.checkpoint import Checkpoint as LogCheckpoint

    class Source:
        def latest_checkpoint(self) -> tuple[LogCheckpoint, bytes]:
            return LogCheckpoint(ORIGIN, 3, b"\x33" * 32), b"signed note"

    with Anchorer(store, client, Source(), KEY, clock=clock) as a:
        assert ok(a.step()).created == [1]
    assert store.get(1).record == AnchorRecord.for_checkpoint(ORIGIN, 3, b"\x33" * 32).encode()


# ---------------------------------------------------------------------------- finality


class RecordsReceipts(ThorClient):
    """Records the ``head`` of every receipt read."""

    def __init__(self, url: str) -> None:
        super().__init__(url, retries=0)
        self.heads: list[str | None] = []

    def receipt(self, tx_id: str | bytes, *, head: str | bytes | None = None) -> Any:
        self.heads.append(None if head is None else str(head))
        return super().receipt(tx_id, head=head)


def test_included_anchor_says_how_far_from_final_and_why(
    store: AnchorStore, node: ThorNode, log: Log, clock: Clock
) -> None:
    c = RecordsReceipts(node.url)
    with closing(c):
        a = make(store, c, log, clock)
        log.publish(2)
        ok(a.step())
        node.mine()  # block 1 holds it; finalized 0 (depth 3)
        r = ok(a.step())
        assert r.included == [1]
        gap = r.not_final[1]
        assert (gap.block_number, gap.finalized_number, gap.best_number) == (1, 0, 1)
        assert gap.blocks_behind == 1 and not gap.final
        assert "not final yet" in gap.explain() and "finalized block is #0" in gap.explain()
        # the operator's view says the same, from what the step stored
        status = node_status(store)
        assert status is not None and status.synced
        assert (status.best_number, status.finalized_number) == (1, 0)
        assert status.finalized_id == node.block_id(0)
        detail = anchor_detail(store.get(1), status)
        assert detail is not None and "1 block below it" in detail and "best #1" in detail

        node.mine(2)  # best 3, finalized 0: still not final, no deadline, nothing resent
        r = ok(a.step())
        assert r.not_final[1].best_number == 3 and r.finalized == []
        assert store.get(1).state is AnchorState.INCLUDED
        c.heads.clear()
        node.mine()  # best 4, finalized 1
        r = ok(a.step())
        assert r.finalized == [1] and r.not_final == {}
        # final = the receipt read from the finalized block: one consistent answer
        assert c.heads == [node.block_id(1)]
        assert anchor_detail(store.get(1), node_status(store)) is None


def test_no_finality_deadline(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """A node whose finality stalls leaves the anchor included, explained, never failed."""
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
    """Both our clock and the node's must say the head is old: a node whose own clock is
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


def test_dynamic_fee_follows_the_next_base_fee(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    node.base_fee = 3 * 10**13  # the next block's, as /fees/history?newestBlock=next says
    a = make(store, client, log, clock)
    log.publish(1)
    tx = thor.decode(store.get_tx(ok(a.step()).submitted[0]).raw)
    assert tx.tx_type == thor.TYPE_DYNAMIC_FEE
    assert tx.max_priority_fee_per_gas == node.priority_fee
    assert tx.max_fee_per_gas == 2 * node.base_fee + node.priority_fee


def test_legacy_price_covers_a_risen_base_fee(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    """At the floor (coef 0) a legacy tx pays the legacy base price; once the base fee is above
    it, the node refuses such a tx, so the anchorer raises the coefficient to cover it."""
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


def test_contract_to_gets_its_execution_gas(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    to = b"\xc0" * 20
    node.deploy(to, gas=20_005)
    a = make(store, client, log, clock, to="0x" + to.hex())
    log.publish(1)
    tx = thor.decode(store.get_tx(ok(a.step()).submitted[0]).raw)
    assert tx.gas == tx.intrinsic_gas() + 20_005 + 15_000
    node.mine()
    assert ok(a.step()).included == [1]
    receipt = client.receipt(store.get(1).tx_id or "")
    assert receipt is not None and not receipt.reverted
    assert receipt.gas_used == tx.intrinsic_gas() + 20_005


def test_contract_to_that_reverts_is_refused_before_sending(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock
) -> None:
    to = b"\xc1" * 20
    node.deploy(to, revert=True)
    a = make(store, client, log, clock, to="0x" + to.hex(), retry_base_s=30)
    log.publish(1)
    r = a.step()
    assert r.node_ok and r.submitted == []
    assert "reverts when the node simulates it" in r.errors[0]
    assert node.submissions == [] and anchor_txs(store, 1) == []
    row = store.get(1)
    assert row.state is AnchorState.PENDING and row.failures == 1
    assert anchor_detail(row, node_status(store)) == row.last_error
    assert ok(a.step()) == StepReport()  # backing off
