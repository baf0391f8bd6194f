"""Load generator: publishes a pre-signed workload for many gateway ids from one process and
times every message from send to the collector's receipt.

    python benchmarks/loadgen.py --workload W.pickle --port P --out result.json
        [--rate MSGS_PER_S] [--duration S] [--timeout S] [--no-receipts]

Without --rate it publishes as fast as the broker takes QoS 1 messages (a bounded in-flight
window, PUBACKs counted): the collector is then measured draining a backlog, which is its
capacity. With --rate it paces messages evenly (a fleet at a given reporting interval) and the
send → receipt times are the latencies a gateway would see from spool to "durable".

A receipt listener (a second connection subscribed to ``<prefix>/+/receipts``) records when
each (gateway, seq) was first confirmed. Publishing uses raw MQTT 5 (benchmarks/mqttraw.py),
pre-encoded before the clock starts, so the generator takes little of the CPU under test."""

from __future__ import annotations

import argparse
import json
import select
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import mqttraw
from benchmarks.workload import TOPIC_PREFIX, Workload
from fieldproof.wire import MalformedMessage, decode_receipt

CHUNK = 256  # packets per write


class ReceiptListener(threading.Thread):
    def __init__(self, port: int, index: dict[tuple[str, int], int], n: int) -> None:
        super().__init__(daemon=True, name="receipts")
        self.client = mqttraw.RawClient(
            "127.0.0.1", port, f"bench-receipts-{time.time_ns()}", receive_maximum=65535
        )
        self.client.subscribe(f"{TOPIC_PREFIX}/+/receipts", qos=1)
        self.index = index
        self.confirmed_at = [0.0] * n
        self.confirmed = 0
        self.receipts = 0
        self.duplicates = 0
        self.unknown = 0
        self.all_done = threading.Event()
        self.stop = threading.Event()
        self.n = n

    def run(self) -> None:
        sock = self.client.sock
        sock.settimeout(0.2)
        reader = self.client.reader
        plen = len(TOPIC_PREFIX) + 1
        while not self.stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            now = time.time()
            acks = []
            for p in reader.feed(data):
                if p.kind != mqttraw.PUBLISH:
                    continue
                topic, pid, payload = mqttraw.parse_publish(p)
                if pid:
                    acks.append(mqttraw.puback_packet(pid))
                self.receipts += 1
                gw = topic[plen:].split("/", 1)[0]
                try:
                    _, seqs = decode_receipt(payload)
                except MalformedMessage:
                    continue
                for seq in seqs:
                    i = self.index.get((gw, seq))
                    if i is None:
                        self.unknown += 1
                    elif self.confirmed_at[i]:
                        self.duplicates += 1
                    else:
                        self.confirmed_at[i] = now
                        self.confirmed += 1
            if acks:
                sock.sendall(b"".join(acks))
            if self.confirmed >= self.n:
                self.all_done.set()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def cpu_seconds() -> float:
    return time.process_time()


def run(args: argparse.Namespace) -> dict[str, Any]:
    w = Workload.load(Path(args.workload))
    msgs = w.messages
    if args.limit:
        msgs = msgs[: args.limit]
    n = len(msgs)
    topics = [w.topic(g).encode() for g in range(len(w.gateways))]
    packets = [
        mqttraw.publish_packet(topics[g], m, 1, (i % 65535) + 1)
        for i, (g, _seq, m) in enumerate(msgs)
    ]
    index = {(w.gateways[g], seq): i for i, (g, seq, _m) in enumerate(msgs)}
    listener = None
    if not args.no_receipts:
        listener = ReceiptListener(args.port, index, n)
        listener.start()
    pub = mqttraw.RawClient("127.0.0.1", args.port, f"bench-pub-{time.time_ns()}")
    window = min(pub.broker_receive_maximum, args.window)
    sock = pub.sock
    sock.setblocking(False)
    reader = pub.reader
    sent_at = [0.0] * n
    sent = acked = 0
    cpu0 = cpu_seconds()
    t_start = time.time()
    rate = args.rate
    pending_out = b""
    while acked < n:
        now = time.time()
        due = min(n, int((now - t_start) * rate) + 1) if rate else n
        if not pending_out and sent < due and sent - acked < window:
            k = min(due - sent, window - (sent - acked), CHUNK)
            pending_out = b"".join(packets[sent : sent + k])
            for i in range(sent, sent + k):
                sent_at[i] = now
            sent += k
        wait = 0.0
        if not pending_out:
            if rate and sent < n and sent - acked < window:
                wait = max(0.0, t_start + sent / rate - time.time())
            else:
                wait = 0.5
        r, w_, _ = select.select([sock], [sock] if pending_out else [], [], wait)
        if w_ and pending_out:
            try:
                k = sock.send(pending_out)
                pending_out = pending_out[k:]
            except BlockingIOError:
                pass
        if r:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                data = b""
            else:
                if not data:
                    raise mqttraw.MqttError("broker closed the publisher connection")
            for p in reader.feed(data):
                if p.kind == mqttraw.PUBACK:
                    if len(p.body) > 2 and p.body[2] >= 0x80:
                        raise mqttraw.MqttError(f"broker refused a publish: {p.body[2]:#x}")
                    acked += 1
    t_last_puback = time.time()
    cpu_publish = cpu_seconds() - cpu0
    t_done = t_last_puback
    if listener is not None:
        listener.all_done.wait(max(0.0, args.timeout - (time.time() - t_start)))
        t_done = max(listener.confirmed_at) if listener.confirmed else float("nan")
        listener.stop.set()
    pub.close()
    result: dict[str, Any] = {
        "messages": n,
        "readings_per_message": w.readings_per_message,
        "gateways": len(w.gateways),
        "rate_offered": rate,
        "t_start": t_start,
        "t_last_send": max(sent_at),
        "t_last_puback": t_last_puback,
        "publish_s": t_last_puback - t_start,
        "publisher_cpu_s": cpu_publish,
        "loadgen_cpu_s": cpu_seconds() - cpu0,
        "window": window,
    }
    if listener is not None:
        lat = sorted(c - s for c, s in zip(listener.confirmed_at, sent_at, strict=True) if c and s)
        result.update(
            confirmed=listener.confirmed,
            receipts=listener.receipts,
            duplicate_confirmations=listener.duplicates,
            unknown_confirmations=listener.unknown,
            t_all_confirmed=t_done if listener.confirmed == n else None,
            t_last_confirmed=t_done,
            latency_p50_ms=percentile(lat, 0.50) * 1000,
            latency_p99_ms=percentile(lat, 0.99) * 1000,
            latency_max_ms=(lat[-1] * 1000) if lat else float("nan"),
            latency_mean_ms=(statistics.fmean(lat) * 1000) if lat else float("nan"),
        )
        # confirmations per 0.5 s from the start: shows ramp-up, steady state and tail
        bins: dict[int, int] = {}
        for c in listener.confirmed_at:
            if c:
                b = int((c - t_start) / 0.5)
                bins[b] = bins.get(b, 0) + 1
        result["confirmed_per_half_second"] = (
            [bins.get(b, 0) for b in range(max(bins) + 1)] if (bins) else []
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="messages/s (0: as fast as possible)")
    ap.add_argument("--limit", type=int, default=0, help="publish only the first N messages")
    ap.add_argument("--window", type=int, default=1000, help="most unacked publishes")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up waiting for receipts")
    ap.add_argument("--no-receipts", action="store_true", help="do not wait for receipts")
    args = ap.parse_args()
    result = run(args)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
