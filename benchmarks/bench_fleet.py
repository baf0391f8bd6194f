"""The gateway's cost per reading, the registry cache, the scale curve, the evidence log
and the bundle verifier."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from benchmarks import workload as wl  # noqa: E402
from benchmarks.bench_ingest import ingest_run  # noqa: E402
from benchmarks.harness import BENCH, PI4_FACTOR, PY, Env, log, write_collector_config  # noqa: E402
from fieldproof.config import load_collector_config  # noqa: E402
from fieldproof.mqtt import wait_for_retained  # noqa: E402
from fieldproof.services import Mosquitto  # noqa: E402


def bench_gateway(env: Env, quick: bool) -> list[dict[str, Any]]:
    from fieldproof.keys import create_key_file
    from fieldproof.wire import gateway_id_for, public_key_bytes

    results = []
    for rpm, rounds, interval in (
        ((1, 300, 0.01), (6, 600, 0.005)) if quick else ((1, 3000, 0.005), (6, 6000, 0.0025))
    ):
        rdir = env.next_dir("gateway")
        broker = Mosquitto(rdir / "mosquitto")
        broker.start()
        database = f"bench_{env.runs_done}"
        kids = []
        try:
            cpath = write_collector_config(
                rdir / "collector",
                f"bench-{env.runs_done}-c0",
                broker.port,
                env.influx.url,
                database,
            )
            cfg = load_collector_config(cpath)
            key = create_key_file(rdir / "gateway.key")
            pub = public_key_bytes(key)
            wl.register(cfg, [gateway_id_for(pub)], [pub])
            kids.append(
                env.spawn(
                    [PY, "-m", "fieldproof", "collector", "run", "--config", str(cpath)],
                    rdir / "collector.log",
                )
            )
            topic = f"fieldproof/v1/_collector/{cfg.collector_id}/status"
            if not wait_for_retained("127.0.0.1", broker.port, topic, b'"online": true', 60):
                raise RuntimeError(f"collector did not come up; see {rdir}")
            out = rdir / "gateway.json"
            args = [
                PY,
                str(BENCH / "gateway_cost.py"),
                "--port",
                str(broker.port),
                "--data-dir",
                str(rdir / "gw"),
                "--key",
                str(rdir / "gateway.key"),
                "--rounds",
                str(rounds),
                "--interval",
                str(interval),
                "--rounds-per-message",
                str(rpm),
                "--out",
                str(out),
            ]
            if rpm == 1:
                args += ["--idle-seconds", "5" if quick else "20"]
            p = subprocess.run(
                args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
            )
            if p.returncode != 0:
                raise RuntimeError(f"gateway benchmark failed:\n{p.stderr[-2000:]}")
            r = json.loads(out.read_text())
            readings = max(1, r["confirmed_readings"])
            messages = max(1, r["confirmed_messages"])
            r["cpu_us_per_reading"] = r["run_cpu_s"] / readings * 1e6
            r["cpu_us_per_message"] = r["run_cpu_s"] / messages * 1e6
            r["written_kib_per_message"] = r["written_bytes"] / messages / 1024
            r["pi4_factor"] = PI4_FACTOR
            r["pi4_cpu_ms_per_message"] = r["cpu_us_per_message"] * PI4_FACTOR / 1000
            # a Pi 4 at the default 60 s interval, one message per round
            r["pi4_cpu_percent_at_60s"] = r["pi4_cpu_ms_per_message"] / 1000 / (60 * rpm) * 100
            results.append(r)
        finally:
            for k in kids:
                env.terminate(k)
            broker.stop()
            env.drop_database(database)
            shutil.rmtree(rdir, ignore_errors=True)
    return results


def bench_registry_cache(sizes: list[int]) -> list[dict[str, Any]]:
    """What the collector's registry cache costs: a full reload (every 10 min) and the
    refresh of changed devices (every 5 s), with nothing and with ten devices changed."""
    from collector.ingest import RegistryCache
    from collector.registry import Registry
    from fieldproof.datadir import open_db

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            db = open_db(Path(tmp) / f"reg{size}.sqlite")
            db.execute("PRAGMA synchronous=OFF")
            reg = Registry(db)
            keys = [wl.gateway_key("registry", i) for i in range(size)]
            from fieldproof.wire import gateway_id_for, public_key_bytes

            with db:
                for k in keys:
                    pub = public_key_bytes(k)
                    gw = gateway_id_for(pub)
                    db.execute(
                        "INSERT INTO devices VALUES"
                        " (?, 'farm', 'field', '', 'active', 0, NULL, '{}')",
                        (gw,),
                    )
                    db.execute("INSERT INTO device_keys VALUES (?, ?, 0, NULL)", (gw, pub))
            cache = RegistryCache(reg)
            full, idle, changed = [], [], []
            for i in range(3):
                t = time.perf_counter()
                cache.reload()
                full.append(time.perf_counter() - t)
                t = time.perf_counter()
                cache.refresh()
                idle.append(time.perf_counter() - t)
                with db:  # ten devices change (new tags), as an operator would
                    db.execute(
                        "UPDATE devices SET field = ? WHERE rowid IN"
                        " (SELECT rowid FROM devices LIMIT 10 OFFSET ?)",
                        (f"field-{i}", i * 10),
                    )
                t = time.perf_counter()
                cache.refresh()
                changed.append(time.perf_counter() - t)
            full_s, idle_s = statistics.median(full), statistics.median(idle)
            out.append(
                {
                    "devices": size,
                    "reload_ms": full_s * 1000,
                    "refresh_idle_ms": idle_s * 1000,
                    "refresh_10_changed_ms": statistics.median(changed) * 1000,
                    # a full reload every full_reload_s, a refresh every refresh_s
                    "share_of_one_core_percent": (
                        full_s / cache.full_reload_s + idle_s / cache.refresh_s
                    )
                    * 100,
                }
            )
            db.close()
    return out


def bench_scale(env: Env, quick: bool, capacity: float | None) -> dict[str, Any]:
    cache = env.work / "workloads"
    realistic = []
    fleet = (10, 1000) if quick else (10, 100, 1000, 10_000)
    duration = 6.0 if quick else 30.0
    interval = 60.0
    for g in fleet:
        rate = g / interval
        n = max(3, int(rate * duration))
        w, wpath = wl.build("scale", g, n, 5, interval, cache_dir=cache)
        log(f"scale: {g} gateways at {interval:.0f} s ({rate:.1f} msg/s) for {duration:.0f} s")
        r = ingest_run(env, w, wpath, kind="collector", procs=1, rate=rate, timeout=duration + 60)
        r.update(interval_s=interval, offered_msgs_per_s=rate)
        realistic.append(r)
    # past realistic: the largest fleet reporting ever more often, until the collector saturates.
    # First its capacity for this traffic (5 readings per message, 10,000 gateway ids), then
    # offered loads around it.
    g = 1000 if quick else 10_000
    probe_n = 4000 if quick else 30_000
    w, wpath = wl.build("scale", g, probe_n, 5, interval, cache_dir=cache)
    log(f"scale: capacity probe, {g} gateways, {probe_n} messages as fast as possible")
    probe = ingest_run(env, w, wpath, kind="collector", procs=1, timeout=300)
    base = probe.get("msgs_per_s") or capacity or 1000.0
    fractions = (0.5, 1.5) if quick else (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    sat_duration = 4.0 if quick else 15.0
    rates = [round(base * f, -1) for f in fractions]
    n_max = int(max(rates) * sat_duration)
    w, wpath = wl.build("scale", g, n_max, 5, interval, cache_dir=cache)
    saturation = []
    for rate in rates:
        n = int(rate * sat_duration)
        log(f"scale: {g} gateways, {rate:.0f} msg/s offered (interval {g / rate:.2f} s)")
        r = ingest_run(
            env,
            w,
            wpath,
            kind="collector",
            procs=1,
            rate=rate,
            limit=n,
            timeout=sat_duration + (10 if quick else 60),
        )
        r.update(interval_s=g / rate, offered_msgs_per_s=rate)
        saturation.append(r)
    return {
        "capacity_probe": probe,
        "realistic": realistic,
        "saturation": saturation,
        "registry_cache": bench_registry_cache(
            [1000, 10_000] if quick else [1000, 10_000, 100_000]
        ),
    }


def bench_log(quick: bool, out: Path) -> dict[str, Any]:
    path = BENCH / "bench_log.py"
    if not path.exists():
        return {"error": "benchmarks/bench_log.py not found"}
    sizes = "10000" if quick else "10000,100000,1000000,10000000"
    samples = "100" if quick else "300"
    rounds = "20" if quick else "100"
    args = ["--sizes", sizes, "--samples", samples, "--rounds", rounds, "--json", str(out)]
    p = subprocess.run(
        [PY, str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,  # ~310 s here in full mode; --budget caps each pymerkle pass at 300 s
        check=False,
    )
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def bench_verifier(quick: bool, runs: int, out: Path) -> dict[str, Any]:
    """The inspector's verifier on a whole bundle (benchmarks/bench_verify.py), with the raw
    Ed25519 rates it measures in the same run."""
    messages = "10000" if quick else "100000"
    cmd = [PY, str(BENCH / "bench_verify.py"), "--messages", messages, "--runs", str(runs)]
    p = subprocess.run(
        [*cmd, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    data: dict[str, Any] = json.loads(out.read_text())
    return data
