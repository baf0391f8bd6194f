"""The EVM anchorer against a node whose answers are past their bounds: web3's HTTPProvider
reads any answer whole (and requests inflates gzip unbounded), so every client
:func:`anchor.evm_reader.connect` makes reads through a bounded session; an oversized, gzip or
trickled answer ends the step with ``error`` set (nothing lost, no crash), and anchoring
carries on once the node answers honestly.

The node is a real anvil dev chain; :class:`Relay` stands in front of it only to spoil the
answers of one JSON-RPC method, which anvil cannot be made to do."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from anchor.chain_reader import MAX_NODE_ANSWER_BYTES
from anchor.devchain import DevChain
from anchor.evm import CheckpointRef, EvmAnchorer, EvmConfig, StepReport
from anchor.evm_reader import BoundedSession, connect

ORIGIN = "farm.example/fieldproof/log/evm-hostile"


class Relay:
    """Forwards JSON-RPC to ``upstream``; answers to requests naming ``method`` get ``pad``
    spaces appended, are gzip-compressed (``gzip``; with ``bomb`` spaces first, which inflate
    past any bound) though asked for ``identity``, or are sent 64 bytes per ``trickle_s``
    seconds. ``spoiled`` counts them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.method = ""
        self.pad = 0
        self.gzip = False
        self.bomb = 0
        self.trickle_s = 0.0
        self.spoiled = 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = httpx.post(relay.upstream, content=body,
                                  headers={"Content-Type": "application/json"}).content
                spoil = bool(relay.method) and f'"{relay.method}"'.encode() in body
                if spoil:
                    relay.spoiled += 1
                    data += b" " * relay.pad
                    if relay.gzip:
                        data = gzip.compress(data + b" " * relay.bomb)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if spoil and relay.gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if spoil and relay.trickle_s:
                        for i in range(0, len(data), 64):
                            self.wfile.write(data[i : i + 64])
                            self.wfile.flush()
                            time.sleep(relay.trickle_s)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the anchorer gave up on it: what the spoiling is for

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def honest(self) -> None:
        self.method, self.pad, self.gzip, self.bomb, self.trickle_s = "", 0, False, 0, 0.0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[DevChain]:
    with DevChain(tmp_path / "chain", automine=False, slots_in_an_epoch=2) as c:
        yield c


@pytest.fixture
def relay(chain: DevChain) -> Iterator[Relay]:
    r = Relay(chain.url)
    yield r
    r.close()


def ckpt(size: int) -> CheckpointRef:
    return CheckpointRef(ORIGIN, size, hashlib.sha256(f"root {size}".encode()).digest())


def anchorer(chain: DevChain, relay: Relay, tmp_path: Path, **kw: Any) -> EvmAnchorer:
    return EvmAnchorer(EvmConfig(url=relay.url, chain_id=chain.chain_id),
                       chain.private_keys[0], tmp_path / "anchors.db", **kw)


def ok(report: StepReport) -> StepReport:
    assert report.error is None, report.error
    return report


def test_an_oversized_receipt_ends_the_step_and_anchoring_carries_on(
    chain: DevChain, relay: Relay, tmp_path: Path
) -> None:
    """The anchorer's own client (``connect``'s default session): refused by length."""
    a = anchorer(chain, relay, tmp_path)
    assert ok(a.step(ckpt(3))).submitted is not None
    chain.mine(1)
    relay.method, relay.pad = "eth_getTransactionReceipt", MAX_NODE_ANSWER_BYTES
    r = a.step()
    assert r.error is not None and "announces a" in r.error, r
    assert f"{MAX_NODE_ANSWER_BYTES:,} bytes" in r.error and "nothing is lost" in r.error
    assert relay.spoiled == 1 and [x.state for x in a.anchors()] == ["pending"]
    relay.honest()
    ok(a.step())
    assert [x.state for x in a.anchors()] == ["included"]
    a.close()


def test_a_gzip_answer_ends_the_step_unread(
    chain: DevChain, relay: Relay, tmp_path: Path
) -> None:
    """32 MiB of spaces in ~32 KB of gzip: refused by its Content-Encoding, not inflated."""
    a = anchorer(chain, relay, tmp_path)
    relay.method, relay.gzip, relay.bomb = "eth_getBlockByNumber", True, 32 * 1024 * 1024
    r = a.step(ckpt(3))
    assert r.error is not None and "gzip-compressed" in r.error and r.submitted is None, r
    relay.honest()
    assert ok(a.step(ckpt(3))).submitted is not None
    a.close()


def test_a_trickled_answer_ends_the_step_at_its_deadline(
    chain: DevChain, relay: Relay, tmp_path: Path
) -> None:
    """A session with a 1 s deadline (``connect``'s default is 30 s, too long for a test);
    each 64-byte piece comes well within the 2 s read timeout."""
    w3 = connect(relay.url, 2.0, BoundedSession(seconds=1.0))
    a = anchorer(chain, relay, tmp_path, web3=w3)
    relay.method, relay.pad, relay.trickle_s = "eth_chainId", 3000, 0.05
    r = a.step(ckpt(3))
    assert r.error is not None and "took over 1 s to answer" in r.error, r
    relay.honest()
    assert ok(a.step(ckpt(3))).submitted is not None
    a.close()
