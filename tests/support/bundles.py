"""Helpers shared by the bundle, verifier and inspector-page tests (no tests in here).

``Farm`` is a collector's state built with the collector's own classes (registry with its
evidence log, the accepted-message store, the log key, checkpoints) but fed directly instead of
over MQTT, for tests that need exact control (clock anomalies, revocations, many messages).
The integration tests build the same state from a real run instead.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cbor2
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor import thor
from anchor.anchoring import AnchorConfig, Anchorer, AnchorState, AnchorStore
from anchor.devchain import DevChain
from anchor.evidence import EvidenceLog
from anchor.evm import CheckpointRef, EvmAnchorer, EvmConfig
from anchor.thor_client import ThorClient
from collector.registry import Registry
from collector.store import AcceptedRow, CollectorStore
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.formats.checkpoint import Checkpoint
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes

THOR_KEY = thor.SecretKey(
    bytes.fromhex("7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a")
)
QUANTITIES = (
    ("soil_moisture", "/", 0.31),
    ("soil_temperature", "Cel", 18.5),
    ("air_temperature", "Cel", 22.0),
    ("air_humidity", "%RH", 61.0),
    ("soil_ec", "S/m", 0.12),
)


@dataclass
class Gateway:
    gateway: str
    key: Ed25519PrivateKey
    farm: str
    field: str
    seq: int = 0
    boot: int = 1

    def message(
        self,
        t: float,
        *,
        seq: int | None = None,
        boot: int | None = None,
        scale: float = 1.0,
        sensor: str = "station",
    ) -> tuple[bytes, Payload]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        readings = tuple(
            Reading(sensor, q, u, round(v * scale + 0.01 * (seq % 7), 4), t)
            for q, u, v in QUANTITIES
        )
        p = Payload(self.gateway, seq, self.boot if boot is None else boot, readings)
        return encode_message(p, self.key), p


@dataclass
class Farm:
    """A collector's database, log key and checkpoints, fed without MQTT."""

    root: Path
    collector_id: str = "test-collector"
    gateways: list[Gateway] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = CollectorConfig(collector_id=self.collector_id, data_dir=self.root)
        self.db: sqlite3.Connection = open_db(self.config.db_path)
        self.evidence = EvidenceLog.open(self.db, self.config.log_origin, self.config.log_key_file)
        self.registry = Registry(self.db, self.evidence)
        self.store = CollectorStore(self.db, self.evidence)

    @property
    def vkey(self) -> str:
        return self.evidence.verifier().vkey

    def enroll(self, farm: str = "farm-a", field_: str = "north",
               location: str = "47.1,8.2") -> Gateway:
        key = Ed25519PrivateKey.generate()
        gw = gateway_id_for(public_key_bytes(key))
        self.registry.add(gw, public_key_bytes(key), farm, field_, location=location)
        g = Gateway(gw, key, farm, field_)
        self.gateways.append(g)
        return g

    def accept(self, items: list[tuple[bytes, Payload]]) -> None:
        self.store.commit(
            [AcceptedRow(p.gateway, p.seq, p.boot, len(p.readings), m) for m, p in items], [], {}
        )

    def run(
        self, g: Gateway, start: float, count: int, step: float = 60.0, skip: set[int] | None = None
    ) -> None:
        """``count`` messages of ``g``, one per ``step`` seconds from ``start``."""
        items = []
        for i in range(count):
            m = g.message(start + i * step)
            if skip and m[1].seq in skip:
                continue
            items.append(m)
        self.accept(items)

    def checkpoint(self) -> int:
        cp = self.evidence.checkpoint()
        assert cp is not None
        return cp.checkpoint.size

    def close(self) -> None:
        self.db.close()


class FixedSource:
    """A checkpoint source that offers one given checkpoint (what an anchorer reads)."""

    def __init__(self, cp: Checkpoint, note: bytes) -> None:
        self.item = (cp, note)

    def latest_checkpoint(self) -> tuple[Checkpoint, bytes]:
        return self.item


def thor_anchor(
    store_path: Path, cp: Checkpoint, note: bytes, node_url: str, mine: Callable[[], object]
) -> str:
    """Anchor one checkpoint on a Thor node (test double) until its block is final; the
    node mines only when told, so nothing here waits on time. Returns the tx id."""
    with (
        AnchorStore(store_path) as store,
        ThorClient(node_url, retries=1, sleep=lambda s: None) as client,
    ):
        anchorer = Anchorer(store, client, FixedSource(cp, note), THOR_KEY, config=AnchorConfig())
        try:
            for _ in range(12):
                report = anchorer.step()
                assert report.node_ok and not report.errors, report
                row = store.find(cp.origin, cp.size, cp.root_hash)
                if row is not None and row.state is AnchorState.FINALIZED:
                    assert row.tx_id is not None
                    return row.tx_id
                mine()
        finally:
            anchorer.close()
    raise AssertionError("anchor did not finalize")


def evm_anchor(store_path: Path, cp: Checkpoint, chain: DevChain) -> str:
    """Anchor one checkpoint on the anvil dev chain until finalized; returns the tx hash."""
    anchorer = EvmAnchorer(
        EvmConfig(url=chain.url, chain_id=chain.chain_id), chain.private_keys[0], store_path
    )
    try:
        ref = CheckpointRef(cp.origin, cp.size, cp.root_hash)
        for _ in range(12):
            report = anchorer.step(ref)
            assert report.error is None, report.error
            rows = [
                r
                for r in anchorer.anchors()
                if (r.tree_size, r.root_hash) == (cp.size, cp.root_hash)
            ]
            if rows and rows[0].state == "finalized":
                return str(rows[0].tx_hash)
            chain.mine(2)
    finally:
        anchorer.close()
    raise AssertionError("EVM anchor did not finalize")


def anchor_thor(farm: Farm, node_url: str, mine: Callable[[], object]) -> str:
    """Anchor the farm's newest checkpoint on a Thor node (test double)."""
    latest = farm.evidence.latest()
    assert latest is not None
    return thor_anchor(
        farm.root / "anchors-thor.sqlite", latest.checkpoint, latest.note, node_url, mine
    )


def rewrite(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """Decode a bundle's CBOR, let ``edit`` change it in place, encode it again (a tamperer's
    tool: nothing is re-signed or re-proven unless ``edit`` does it)."""
    obj = {k: v for k, v in cbor2.loads(data).items()}
    obj["messages"] = [list(m) for m in obj["messages"]]
    obj["registry"] = [list(m) for m in obj["registry"]]
    obj["checkpoints"] = [
        {"note": c["note"], "anchors": [dict(a) for a in c["anchors"]]} for c in obj["checkpoints"]
    ]
    edit(obj)
    return bytes(cbor2.dumps(obj, canonical=True))


Rewriter = Callable[[str, str, bytes, int, bytes], bytes]


class LyingProxy:
    """An HTTP proxy in front of a real node (or node double) that passes every request on and
    lets ``lie(method, path, request_body, status, response_body)`` change the answer: one of
    the "independent" nodes an inspector asks, gone bad."""

    def __init__(self, upstream: str, lie: Rewriter) -> None:
        self.upstream = upstream.rstrip("/")
        self.lie = lie
        self.lies = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                r = httpx.request(
                    self.command,
                    proxy.upstream + self.path,
                    content=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                    timeout=30,
                )
                out = proxy.lie(self.command, self.path, body, r.status_code, r.content)
                if out != r.content:
                    proxy.lies += 1
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rewrite_json(body: bytes, change: Callable[[Any], Any]) -> bytes:
    """Apply ``change`` to a JSON body (JSON-RPC result or REST object)."""
    return json.dumps(change(json.loads(body))).encode()
