"""The naive baseline: what a plain MQTT → InfluxDB bridge with signature checks costs.

    python benchmarks/bridge.py --port P --influx URL --database DB --keys keys.json

A paho subscriber (QoS 1, paho's automatic ack on receipt) decodes each COSE_Sign1 with cbor2,
verifies it with libsodium's Ed25519 (as the product does), turns the SenML records into line
protocol and writes batches of up to 5,000 messages to InfluxDB's ``/write``. No strict re-encoding
checks, no dedupe, no evidence log, no SQLite, no ack-after-durable, no receipts: everything
the collector does beyond this is what its guarantees cost. After each batch it prints
``W <messages written so far> <epoch>``; it runs until terminated."""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from typing import Any

import cbor2
import httpx
import paho.mqtt.client as paho
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--influx", required=True)
    ap.add_argument("--database", required=True)
    ap.add_argument("--keys", required=True, help="JSON {gateway id: public key hex}")
    ap.add_argument("--share-group", default="")
    ap.add_argument("--client-id", default="bridge")
    args = ap.parse_args()
    with open(args.keys) as f:
        hex_keys: dict[str, str] = json.load(f)
    # the same Ed25519 verify as the product (libsodium), so the gap is what the guarantees cost
    keys = {gw: bytes.fromhex(h) for gw, h in hex_keys.items()}
    http = httpx.Client(base_url=args.influx, timeout=30)
    http.post("/query", params={"q": f'CREATE DATABASE "{args.database}"'})
    inbox: queue.Queue[bytes] = queue.Queue()
    ready = threading.Event()

    def on_connect(c: paho.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        topic = "fieldproof/v1/+/readings"
        if args.share_group:
            topic = f"$share/{args.share_group}/{topic}"
        c.subscribe(topic, qos=1)

    def on_subscribe(c: paho.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
        ready.set()

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        inbox.put(bytes(msg.payload))

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=paho.MQTTv5
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    ready.wait(30)
    print("READY", flush=True)
    written = bad = 0
    while True:
        batch = [inbox.get()]
        deadline = time.monotonic() + 0.05
        while len(batch) < 5000:
            try:
                batch.append(inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        lines = []
        for raw in batch:
            try:
                protected, _unprotected, payload, signature = cbor2.loads(raw).value
                gw = cbor2.loads(protected)[4].decode()
                tbs = cbor2.dumps(["Signature1", protected, b"", payload])
                crypto_sign_open(signature + tbs, keys[gw])
                body = cbor2.loads(payload)
            except (BadSignatureError, KeyError, ValueError, TypeError, cbor2.CBORDecodeError):
                bad += 1
                continue
            pack = body["e"]
            bt = pack[0][-3]
            for rec in pack:
                sensor, quantity = rec[0].split("/")
                ts = round((bt + rec.get(6, 0)) * 1e9)
                lines.append(
                    f"{quantity},gateway={gw},sensor={sensor},unit={rec.get(1, '')} "
                    f"seq={body['seq']}i,value={float(rec[2])!r} {ts}"
                )
            written += 1
        while True:
            try:
                r = http.post(
                    "/write",
                    params={"db": args.database, "precision": "ns"},
                    content="\n".join(lines).encode(),
                )
                if r.status_code == 204:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        print(f"W {written + bad} {time.time()}", flush=True)


if __name__ == "__main__":
    main()
