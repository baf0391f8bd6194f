"""The anchorer's Thor client against a node that misanswers its own requests: every answer is
bounded in bytes (per kind), refused compressed, and cut off past its deadline, and each
becomes "the node is unusable for now" — the step reports it, nothing is lost, the loop backs
off and anchoring carries on once the node answers honestly again.

A real node (thor solo) cannot be made to pad, trickle or gzip an answer it was asked for
uncompressed, so these run on the double tests/support/thornode.py and its ``misanswer`` knob;
the honest paths run on thor solo in tests/integration/test_anchoring_real.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from anchor import thor
from anchor.anchoring import Anchorer, AnchorState, AnchorStore, TxStatus, run_forever
from anchor.chain_reader import ChainNodeUnavailable, NodeAnswerError, NodeTooSlow
from anchor.service import AnchorService, anchor_views
from anchor.thor_client import (
    MAX_ANSWER_BYTES,
    MAX_BLOCK_ANSWER_BYTES,
    NodeAnswerRefused,
    NodeAnswerTooSlow,
    NodeResponseError,
    NodeUnreachable,
    ThorClient,
)
from fieldproof.config import load_collector_config
from tests.support import anchoring as rig
from tests.support.anchoring import Clock, Log, collector_config, grow_log, make_anchorer, ok
from tests.support.thornode import Misanswer, ThorNode, funded

KEY_HEX = "7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a"
KEY = thor.SecretKey(bytes.fromhex(KEY_HEX))
RECEIPT = r"^GET /transactions/0x[0-9a-f]{64}/receipt"
TX = r"^GET /transactions/0x[0-9a-f]{64}\?"
SEND = r"^POST /transactions$"
BEST = r"^GET /blocks/best"

store, log, clock = rig.store, rig.log, rig.clock  # the rig's fixtures, bound by name
make = partial(make_anchorer, key=KEY)


@pytest.fixture
def node() -> Iterator[ThorNode]:
    with ThorNode(finality_depth=3, energy=funded(KEY.address)) as n:
        yield n


@pytest.fixture
def client(node: ThorNode) -> Iterator[ThorClient]:
    """Deadline 1 s an answer, each read within 2 s: a trickle of 64 bytes per 0.05 s passes
    httpx's read timeout and only the client's own deadline stops it."""
    with ThorClient(node.url, retries=1, sleep=lambda s: None, timeout=2.0, answer_s=1.0) as c:
        yield c


def test_the_error_classes_fit_the_anchorers_and_the_readers_vocabulary() -> None:
    """The anchorer pauses on NodeUnreachable/NodeResponseError; a reader tells an unusable
    answer (NodeAnswerError) from a node too slow (NodeTooSlow, a ChainNodeUnavailable)."""
    assert issubclass(NodeAnswerRefused, NodeResponseError)
    assert issubclass(NodeAnswerRefused, NodeAnswerError)
    assert issubclass(NodeAnswerTooSlow, NodeUnreachable)
    assert issubclass(NodeAnswerTooSlow, NodeTooSlow)
    assert issubclass(NodeAnswerTooSlow, ChainNodeUnavailable)


def submitted(a: Anchorer, log: Log) -> str:
    """The tx of anchor 1, sent and held by the node's pool."""
    log.publish(1)
    tx_id: str = ok(a.step()).submitted[0]
    return tx_id


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "until close"])
def test_an_oversized_receipt_pauses_anchoring_until_the_node_answers_honestly(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
    declared: bool,
) -> None:
    """A receipt padded past the block-sized bound: refused by its announced length, else read
    no further than the bound; the anchor stays pending, then is included."""
    a = make(store, client, log, clock)
    tx_id = submitted(a, log)
    node.mine()
    node.no_length = not declared
    node.misanswer = Misanswer(RECEIPT, pad=MAX_BLOCK_ANSWER_BYTES)
    for _ in range(2):
        r = a.step()
        assert not r.node_ok and len(r.errors) == 1, r
        said = "announces a" if declared else "answered over"
        assert said in r.errors[0] and f"{MAX_BLOCK_ANSWER_BYTES:,} bytes" in r.errors[0]
        assert f"/transactions/{tx_id}/receipt" in r.errors[0]
        assert store.get(1).state is AnchorState.PENDING
        clock.now += 60
    assert node.misanswer.hits == 2
    node.misanswer = None
    node.no_length = False
    r = ok(a.step())
    assert r.included == [1] and store.get(1).tx_id == tx_id


def test_an_oversized_transaction_answer_is_refused_at_its_own_bound(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
) -> None:
    """A pending tx's answer padded past the 1 MiB any transaction fits in (thor's pool takes
    64 KiB) is refused, though a block may be that large: the bound is per kind of answer."""
    a = make(store, client, log, clock)
    tx_id = submitted(a, log)
    node.misanswer = Misanswer(TX, pad=MAX_ANSWER_BYTES)
    r = a.step()
    assert not r.node_ok and "announces a" in r.errors[0], r
    assert f"{MAX_ANSWER_BYTES:,} bytes" in r.errors[0] and f"/transactions/{tx_id}" in r.errors[0]
    node.misanswer = Misanswer(r"^GET /blocks/1\?expanded=true", pad=MAX_ANSWER_BYTES)
    node.mine()
    block = client._json("GET", "/blocks/1", params={"expanded": "true"},
                         limit=MAX_BLOCK_ANSWER_BYTES)
    assert node.misanswer.hits == 1 and block["transactions"][0]["id"] == tx_id
    node.misanswer = None
    assert ok(a.step()).included == [1]


def test_a_trickled_send_leaves_the_tx_unknown_and_anchoring_carries_on(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
) -> None:
    """The node takes the tx but trickles its answer: cut off at the client's deadline, the
    tx's fate is unknown; the next step finds it in the node's pool and waits for its block."""
    a = make(store, client, log, clock)
    node.misanswer = Misanswer(SEND, trickle_s=0.05, pad=3000)  # ~3 KB at 64 B/0.05 s: ~2.5 s
    log.publish(1)
    r = a.step()
    assert not r.node_ok and r.submitted == [], r
    assert "took over 1 s to answer POST /transactions" in r.errors[0]
    (t,) = store.txs(1)
    assert t.status is TxStatus.UNKNOWN and node.pending_ids == [t.tx_id]
    node.misanswer = None
    ok(a.step())
    assert store.txs(1)[0].status is TxStatus.SENT
    node.mine()
    assert ok(a.step()).included == [1]


def test_a_trickled_receipt_is_cut_off_at_the_deadline(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
) -> None:
    a = make(store, client, log, clock)
    submitted(a, log)
    node.mine()
    spoil = node.misanswer = Misanswer(RECEIPT, trickle_s=0.05, pad=3000)
    r = a.step()
    assert not r.node_ok and "took over 1 s to answer GET /transactions/" in r.errors[0], r
    assert store.get(1).state is AnchorState.PENDING
    assert spoil.ended.wait(10) and spoil.cut_off  # the client hung up, the node had more
    node.misanswer = None
    assert ok(a.step()).included == [1]


def test_trickled_headers_are_cut_off_at_the_deadline_too(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
) -> None:
    """60 header lines, one per 0.05 s, before any body: httpx's read timeout restarts with
    each, so only the deadline on every socket read stops the client, before the node is done
    (without it the client would read all 3 s of headers and then refuse the answer, too late:
    the node would not be cut off)."""
    assert client._backend is not None, "httpx's transport no longer takes the deadline"
    a = make(store, client, log, clock)
    submitted(a, log)
    spoil = node.misanswer = Misanswer(BEST, trickle_s=0.05, slow_headers=60)
    r = a.step()
    assert not r.node_ok and "took over 1 s to answer GET /blocks/best" in r.errors[0], r
    assert spoil.ended.wait(10) and spoil.cut_off, "the client read the node's headers whole"
    node.misanswer = None
    node.mine()
    assert ok(a.step()).included == [1]


def test_a_gzip_answer_is_refused_unread(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
) -> None:
    """The best block gzipped though asked for ``identity``: 32 MiB of spaces in ~32 KB, which
    inflated would pass every bound; refused by its Content-Encoding before a byte is read."""
    a = make(store, client, log, clock)
    submitted(a, log)
    node.misanswer = Misanswer(BEST, gzip=True, gzip_bomb=32 * 1024 * 1024)
    r = a.step()
    assert not r.node_ok and "answered 'gzip'-compressed" in r.errors[0], r
    assert "GET /blocks/best" in r.errors[0]
    node.misanswer = None
    node.mine()
    assert ok(a.step()).included == [1]


class TurnHonestAfter(threading.Event):
    """Stops the loop after ``n`` waits, recording each delay; after ``honest_at`` waits the
    node stops misanswering."""

    def __init__(self, node: ThorNode, n: int, honest_at: int) -> None:
        super().__init__()
        self.node, self.n, self.honest_at = node, n, honest_at
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) == self.honest_at:
            self.node.misanswer = None
        if len(self.waits) >= self.n:
            self.set()
        return self.is_set()


def test_the_loop_backs_off_on_a_hostile_answer_and_resumes(
    store: AnchorStore, client: ThorClient, node: ThorNode, log: Log, clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """run_forever: each refused answer is one warning, the delay doubles as for a node that is
    down, and once the node is honest the next step sends the anchor."""
    a = make(store, client, log, clock)
    log.publish(1)
    node.misanswer = Misanswer(BEST, pad=MAX_ANSWER_BYTES)
    stop = TurnHonestAfter(node, 4, honest_at=3)
    with caplog.at_level(logging.WARNING, logger="anchor.anchoring"):
        run_forever(a, stop, interval_s=10, max_backoff_s=600)
    assert stop.waits == [20, 40, 80, 10]
    refused = [r for r in caplog.records if "announces a" in r.getMessage()]
    assert len(refused) == 3 and all(r.levelno == logging.WARNING for r in refused)
    assert len(store.txs(1)) == 1 and node.pending_ids == [store.txs(1)[0].tx_id]


def test_anchor_run_keeps_its_loop_alive_through_hostile_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``fieldproof anchor run``'s service over a real collector database: an oversized and a
    gzip answer are a step that did not reach the node (False: back off), not a crash, each
    said once (the anchorer says it; the service does not repeat it); the anchor is sent once
    the node is honest."""
    caplog.set_level(logging.WARNING)
    with ThorNode(finality_depth=2, energy=funded(KEY.address)) as node:
        cfg_path = collector_config(tmp_path, KEY_HEX, f'chain = "thor"\nurl = "{node.url}"\n')
        grow_log(cfg_path, 4)
        service = AnchorService(load_collector_config(cfg_path))
        try:
            node.misanswer = Misanswer(BEST, pad=MAX_ANSWER_BYTES)
            assert not service.step()
            node.misanswer = Misanswer(r"^GET /blocks/finalized", gzip=True)
            assert not service.step()
            said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(said) == 2 and len(set(said)) == 2, said
            node.misanswer = None
            assert service.step()
            node.mine()
            assert service.step()
        finally:
            service.close()
        (view,) = anchor_views(load_collector_config(cfg_path))
        assert view.state == "included" and view.block_number == 1
