"""Gateway cost: CPU time and peak RSS of a real GatewayAgent per signed, spooled, published
and confirmed reading. Run by benchmarks/run.py against a real broker and collector:

    python benchmarks/gateway_cost.py --port P --data-dir D --key K --rounds N --interval S
        [--rounds-per-message R] --out result.json

The agent samples a simulated field station (five readings per round), signs with Ed25519,
commits each message to its SQLite spool (WAL, synchronous=FULL), publishes QoS 1, marks it
published on PUBACK (in memory) and deletes it after the collector's receipt (with the next
message's commit). CPU is the process's user+system time (all threads) from just before ``run``
until every message is confirmed; imports and construction are excluded and reported apart.
Written bytes are /proc/self/io ``write_bytes``: what this process dirtied for storage.

Peak RSS is ``VmHWM`` from /proc/self/status, this program's own high-water mark.
``ru_maxrss`` is not: Linux keeps the larger of it and the parent's RSS across fork+exec, so
under benchmarks/run.py it reported run.py's 129 MiB; it is kept as ``ru_maxrss_kib`` to show.
Then a few micro-measurements split the per-message cost: signing and the spool commit."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T_IMPORT = time.process_time()

from fieldproof.config import MqttConfig  # noqa: E402
from fieldproof.keys import load_key_file  # noqa: E402
from fieldproof.wire import Payload, Reading, encode_message  # noqa: E402
from gateway.agent import GatewayAgent  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.sensors.simulated import SimulatedConfig  # noqa: E402
from gateway.spool import Spool  # noqa: E402


def written_bytes() -> int:
    """Bytes this process caused to be written to storage (/proc/self/io write_bytes)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib() -> int:
    """This process's resident high-water mark (VmHWM), not inherited from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def micro(key_path: Path, n: int = 2000) -> dict[str, float]:
    key = load_key_file(key_path)
    readings = tuple(
        Reading("station", q, u, 0.25, 1.7e9)
        for q, u in (
            ("soil_moisture", "/"),
            ("soil_temperature", "Cel"),
            ("air_temperature", "Cel"),
            ("air_humidity", "%RH"),
            ("soil_ec", "S/m"),
        )
    )
    t = time.process_time()
    for i in range(n):
        encode_message(Payload("gw-0011223344556677", i + 1, 1, readings), key)
    sign_us = (time.process_time() - t) / n * 1e6
    msg = encode_message(Payload("gw-0011223344556677", 1, 1, readings), key)
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "spool.sqlite")
        m = n // 4
        t, w = time.process_time(), time.perf_counter()
        for _ in range(m):
            spool.add(lambda seq: (msg, 5))
        add_cpu = (time.process_time() - t) / m * 1e6
        add_wall = (time.perf_counter() - w) / m * 1e6
        t, w = time.process_time(), time.perf_counter()
        for lo in range(1, m + 1, 10):  # PUBACK (memory) and a receipt for 10, deleted now
            spool.mark_published(range(lo, lo + 10))
            spool.confirm(range(lo, lo + 10))
        done_cpu = (time.process_time() - t) / m * 1e6
        done_wall = (time.perf_counter() - w) / m * 1e6
        spool.close()
    return {
        "sign_5_readings_cpu_us": sign_us,
        "spool_add_cpu_us": add_cpu,
        "spool_add_wall_us": add_wall,
        "spool_publish_confirm_cpu_us": done_cpu,
        "spool_publish_confirm_wall_us": done_wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--interval", type=float, required=True)
    ap.add_argument("--rounds-per-message", type=int, default=1)
    ap.add_argument("--idle-seconds", type=float, default=0.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import_cpu = cpu()
    config = GatewayConfig(
        key_file=args.key,
        data_dir=args.data_dir,
        farm="bench-farm",
        field="f1",
        interval_s=args.interval,
        rounds_per_message=args.rounds_per_message,
        status_interval_s=30,
        confirm_timeout_s=30,
        mqtt=MqttConfig(host="127.0.0.1", port=args.port),
        sensors=[SimulatedConfig(kind="simulated", name="station", seed=1)],
    )
    agent = GatewayAgent(config)
    rss_before = peak_rss_kib()
    c0, w0, b0 = cpu(), time.perf_counter(), written_bytes()
    agent.run(duration=args.rounds * args.interval, drain_timeout=60)
    c1, w1, b1 = cpu(), time.perf_counter(), written_bytes()
    spool = Spool(config.spool_path)
    st = spool.stats()
    spool.close()
    result: dict[str, Any] = {
        "rounds_per_message": args.rounds_per_message,
        "interval_s": args.interval,
        "startup_cpu_s": import_cpu,
        "rss_after_imports_kib": rss_before,
        "run_cpu_s": c1 - c0,
        "run_wall_s": w1 - w0,
        "written_bytes": b1 - b0,
        "confirmed_messages": st.confirmed_messages,
        "confirmed_readings": st.confirmed_readings,
        "left_in_spool": st.depth,
        "peak_rss_kib": peak_rss_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    if args.idle_seconds:
        idle_cfg = config.model_copy(update={"interval_s": 3600.0})
        idle = GatewayAgent(idle_cfg)
        c0 = cpu()
        idle.run(duration=args.idle_seconds, drain_timeout=1)
        result["idle_cpu_percent"] = (cpu() - c0) / args.idle_seconds * 100
    result.update(micro(args.key))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
