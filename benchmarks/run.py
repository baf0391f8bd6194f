"""fieldproof benchmark harness: one command, real services, a results table.

    python benchmarks/run.py [--quick] --out benchmarks/results/

Starts its own Mosquitto and InfluxDB on loopback (fieldproof.services), then measures

* raw Ed25519 verify rate (``cryptography``, one core and two processes) and the product's
  per-message decode+verify rate — the ceiling every figure below is compared with;
* collector ingest end to end: pre-signed messages for many gateway ids published by one
  process (raw MQTT 5, pre-encoded) → Mosquitto → 1 or 2 collector processes (shared
  subscription) → verified → InfluxDB + evidence log in one SQLite commit → acked → receipts
  back; throughput is all messages / (last receipt − first publish), at 1 and 10 readings per
  message, medians of several runs, with the CPU each process spent per message;
* the same traffic through a naive bridge (paho → verify → InfluxDB, nothing else);
* latency (publish → receipt) at half the measured capacity;
* the gateway's CPU and peak RSS per signed, spooled, published, confirmed reading;
* a scale curve: 10 … 10,000 gateways at a 60 s interval, then 10,000 gateways at shorter
  intervals until the collector saturates;
* the evidence-log benchmark (benchmarks/bench_log.py);
* with --profile (default in full mode), a py-spy profile of a saturated collector.

Writes ``results.json`` and ``results.md`` into --out. ``--quick`` is a < 3 minute sanity run
with small counts and one run per figure; its numbers are noisy."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks import workload as wl  # noqa: E402
from fieldproof.config import load_collector_config  # noqa: E402
from fieldproof.mqtt import wait_for_retained  # noqa: E402
from fieldproof.services import InfluxDB, Mosquitto  # noqa: E402

PY = sys.executable
BENCH = Path(__file__).resolve().parent
PI4_FACTOR = 8.0
"""How much slower a Raspberry Pi 4 (Cortex-A72, 1.5 GHz) runs this Python code than one core
of the benchmark machine. Python-heavy work on an A72 runs 6-8x slower than on a current x86
server core (published pyperformance / single-core CPU benchmark comparisons); we take the
pessimistic end. Ed25519 in OpenSSL has no A72-specific assembly, so signing is no better."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- machine


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    from cryptography.hazmat.backends.openssl.backend import backend

    versions = {
        name: metadata.version(name)
        for name in ("cryptography", "paho-mqtt", "cbor2", "httpx", "pydantic")
    }
    versions["openssl"] = backend.openssl_version_text()
    versions["sqlite"] = sqlite3.sqlite_version
    versions["mosquitto"] = _first_line(["mosquitto", "-h"])
    versions["influxdb"] = _first_line(["influxd", "version"])
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "virtualization": _first_line(["systemd-detect-virt"]),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def proc_cpu(pid: int) -> float:
    """user+system CPU seconds of a process (all its threads)."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


# ------------------------------------------------------------------------------- verify


def _verify_worker(seconds: float, backend: str = "libsodium") -> float:
    """Raw Ed25519 verifications per second on real Sig_structures: ``libsodium`` (PyNaCl,
    what the product uses, fieldproof/ed25519.py) or ``openssl`` (``cryptography``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fieldproof import ed25519, wire

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    raw = wire.public_key_bytes(key)
    msgs = []
    for i in range(200):
        m = wire.encode_message(
            wire.Payload(
                "gw-0011223344556677", i + 1, 1, (wire.Reading("s", "q", "/", 0.2, 1.7e9),)
            ),
            key,
        )
        s = wire.parse_sign1(m)
        msgs.append((s.signature, s.to_be_signed()))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if backend == "openssl":
            for sig, data in msgs:
                pub.verify(sig, data)
        else:
            for sig, data in msgs:
                ed25519.verify(raw, sig, data)
        n += len(msgs)
    return n / (time.perf_counter() - t0)


def _verify_openssl(seconds: float) -> float:
    return _verify_worker(seconds, "openssl")


def _decode_worker(readings: int, seconds: float) -> float:
    from benchmarks.workload import _sign_range, gateway_key
    from fieldproof import wire

    msgs = [m for _, _, m in _sign_range("verify", 1, readings, 60.0, 1.7e9, 0, 300)]
    pub = wire.public_key_bytes(gateway_key("verify", 0))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for m in msgs:
            wire.decode_message(m, pub)
        n += len(msgs)
    return n / (time.perf_counter() - t0)


def bench_verify(runs: int, seconds: float) -> dict[str, Any]:
    """The ceiling: raw Ed25519 verify with the product's backend (libsodium) and with OpenSSL
    for reference, one core and two processes at once; and the product's decode_message."""
    one = [_verify_worker(seconds) for _ in range(runs)]
    one_ossl = [_verify_openssl(seconds) for _ in range(runs)]
    ctx = get_context("spawn")
    two, two_ossl = [], []
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        for _ in range(runs):
            two.append(sum(pool.map(_verify_worker, [seconds, seconds])))
            two_ossl.append(sum(pool.map(_verify_openssl, [seconds, seconds])))
    dec1 = [_decode_worker(1, seconds) for _ in range(runs)]
    dec10 = [_decode_worker(10, seconds) for _ in range(runs)]
    return {
        "backend": "libsodium (PyNaCl)",
        "ed25519_verify_per_s_one_core": statistics.median(one),
        "ed25519_verify_per_s_two_processes": statistics.median(two),
        "openssl_verify_per_s_one_core": statistics.median(one_ossl),
        "openssl_verify_per_s_two_processes": statistics.median(two_ossl),
        "decode_message_per_s_1_reading": statistics.median(dec1),
        "decode_message_per_s_10_readings": statistics.median(dec10),
        "runs": runs,
    }


# ------------------------------------------------------------------------------- variants

# Measured "what if" for a proposed product change: a name -> Python bootstrap that patches the
# collector in its own process (the product code is not modified) and then runs
# ``fieldproof collector run --config sys.argv[1]``. ingest_run(..., variant=NAME) uses it.
# The first one, "batched-agronomy" (agronomy state committed per batch, not per message),
# measured 2.7-3.2x at 10 readings/msg and became the product's behaviour in 7631181; add the
# next proposal here to measure it before anyone writes it.
VARIANTS: dict[str, str] = {}


# ------------------------------------------------------------------------------- services


def write_collector_config(
    cdir: Path, cid: str, port: int, influx_url: str, database: str, share_group: str = "bench"
) -> Path:
    cdir.mkdir(parents=True, exist_ok=True)
    path = cdir / "collector.toml"
    path.write_text(
        f"""collector_id = "{cid}"
data_dir = "{cdir}"
share_group = "{share_group}"

[mqtt]
host = "127.0.0.1"
port = {port}

[influx]
api = "v1"
url = "{influx_url}"
database = "{database}"
"""
    )
    return path


@dataclass
class Env:
    work: Path
    influx: InfluxDB
    py_spy: str | None
    quiet_wait_s: float = 60.0
    runs_done: int = 0
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def wait_quiet(self, threshold: float = 0.3) -> float:
        """Wait (at most ``quiet_wait_s``) until the rest of the machine uses less than
        ``threshold`` cores; returns the busy cores seen last. The machine may be shared."""
        if self.quiet_wait_s <= 0:
            return 0.0
        deadline = time.monotonic() + self.quiet_wait_s
        while True:
            b0 = system_cpu()[0]
            time.sleep(1.0)
            busy = system_cpu()[0] - b0
            if busy < threshold or time.monotonic() > deadline:
                if busy >= threshold:
                    log(f"   machine still busy ({busy:.2f} cores used by others); going on")
                return busy

    def next_dir(self, label: str) -> Path:
        self.runs_done += 1
        d = self.work / f"run{self.runs_done:03d}-{label}"
        d.mkdir(parents=True)
        return d

    def spawn(self, args: list[str], log_path: Path, **kw: Any) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            p = subprocess.Popen(
                args,
                stdout=kw.pop("stdout", out),
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                **kw,
            )
        self.children.append(p)
        return p

    def terminate(self, p: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.children:
            self.children.remove(p)

    def kill_all(self) -> None:
        for p in list(self.children):
            if p.poll() is None:
                p.kill()
                p.wait()
        self.children.clear()

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{self.influx.url}/query", params={"q": f'DROP DATABASE "{name}"'}, timeout=60
            )

    def influx_points(self, database: str) -> int:
        q = 'SELECT count("seq") FROM ' + ",".join(q for q, _ in wl.QUANTITIES)
        r = httpx.get(f"{self.influx.url}/query", params={"db": database, "q": q}, timeout=120)
        r.raise_for_status()
        series = r.json()["results"][0].get("series", [])
        return sum(int(s["values"][0][1]) for s in series)


class Profiler:
    """py-spy attached to a running process, raw collapsed stacks, summarised on stop."""

    def __init__(self, py_spy: str, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--threads",
                "--full-filenames",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return summarise_profile(self.out)


# frames whose inclusive share tells where a message's time goes: (label, function names,
# path fragments); a sample counts for a bucket if any frame of its stack matches
PROFILE_BUCKETS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Ed25519 verify (libsodium via PyNaCl)", ("_verify_raw",), ()),
    ("decode_message (all: strict checks, verify, SenML)", ("decode_message_plain",), ()),
    ("  exact-form payload reader", ("_read_payload_exact",), ()),
    (
        "  general path: strict deterministic-encoding check",
        ("decode_deterministic", "_decode_fixed_schema"),
        (),
    ),
    ("  general path: SenML checks", ("_payload_general",), ()),
    ("open_message (exact-form parse, or parse_sign1)", ("open_message", "parse_sign1"), ()),
    ("Ingestor.lines (line protocol)", ("Ingestor.lines", "Point.to_line"), ()),
    ("agronomy deriver", ("AgronomyDeriver.derive",), ()),
    ("InfluxDB write (httpx, waiting included)", ("write_salvaging",), ()),
    ("SQLite commit (log append, dedupe rows, fsync)", ("CollectorStore.commit",), ()),
    ("  evidence log append", ("NodeStore.append",), ()),
    ("dedupe lookups (store.digests)", ("CollectorStore.digests",), ()),
    ("receipts (encode + paho publish)", ("Collector._send_receipts",), ()),
    ("manual acks (one write a batch)", ("Collector._ack",), ()),
    ("checkpoints", ("Collector.maybe_checkpoint",), ()),
    ("stats", ("Collector.write_stats",), ()),
    (
        "MQTT client, any thread (paho + IngestClient receive path)",
        (),
        ("/paho/", "collector/mqtt_client.py"),
    ),
    ("inbox handoff (deque + event)", ("Collector._deliver", "Collector._next_batch"), ()),
)


def _frame(f: str) -> tuple[str, str]:
    name, _, loc = f.partition(" (")
    return name, loc.rsplit(":", 1)[0]


def summarise_profile(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"error": "py-spy wrote no profile"}
    total = 0
    self_time: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        head, *frames = stack.split(";")
        threads[head.split(": ", 1)[-1]] += count
        parsed = [_frame(f) for f in frames]
        if parsed:
            fn, loc = parsed[-1]
            self_time[f"{fn} ({Path(loc).name})"] += count
        for label, names, paths in PROFILE_BUCKETS:
            if any(
                any(n == k or n.endswith("." + k) for k in names) or any(p in loc for p in paths)
                for n, loc in parsed
            ):
                buckets[label] += count
    if not total:
        return {"error": "empty profile"}
    return {
        "samples": total,
        "by_thread_percent": {k: round(100 * v / total, 1) for k, v in threads.most_common()},
        "inclusive_percent": {
            label: round(100 * buckets[label] / total, 1) for label, _, _ in PROFILE_BUCKETS
        },
        "top_self_percent": [
            (name, round(100 * v / total, 1)) for name, v in self_time.most_common(25)
        ],
    }


# ------------------------------------------------------------------------------- ingest


def _bridge_reader(p: subprocess.Popen[bytes], state: dict[str, Any], idx: int) -> None:
    assert p.stdout is not None
    for raw in p.stdout:
        line = raw.decode(errors="replace").strip()
        if line == "READY":
            state["ready"].add(idx)
        elif line.startswith("W "):
            _, n, t = line.split()
            with state["lock"]:
                state["written"][idx] = int(n)
                state["last"][idx] = float(t)


def ingest_run(
    env: Env,
    w: wl.Workload,
    wpath: Path,
    *,
    kind: str,
    procs: int,
    rate: float = 0.0,
    limit: int = 0,
    timeout: float = 600.0,
    profile: bool = False,
    variant: str = "",
) -> dict[str, Any]:
    """One timed run on a fresh broker, fresh collector databases and a fresh InfluxDB
    database. ``kind`` is "collector" or "bridge"."""
    busy_before = env.wait_quiet()
    rdir = env.next_dir(f"{kind}{procs}")
    broker = Mosquitto(rdir / "mosquitto")
    broker.start()
    database = f"bench_{env.runs_done}"
    n = limit or len(w.messages)
    kids: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {
        "kind": kind,
        "procs": procs,
        "messages": n,
        "readings_per_message": w.readings_per_message,
        "gateways": len(w.gateways),
        "rate_offered": rate,
        "busy_cores_before": busy_before,
        "variant": variant,
    }
    bridge_state: dict[str, Any] = {
        "ready": set(),
        "written": {},
        "last": {},
        "lock": threading.Lock(),
    }
    configs = []
    try:
        if kind == "collector":
            for c in range(procs):
                cpath = write_collector_config(
                    rdir / f"collector{c}",
                    f"bench-{env.runs_done}-c{c}",
                    broker.port,
                    env.influx.url,
                    database,
                )
                cfg = load_collector_config(cpath)
                wl.register(cfg, w.gateways, w.public_keys)
                configs.append(cfg)
                cmd = (
                    [PY, "-c", VARIANTS[variant], str(cpath)]
                    if variant
                    else [PY, "-m", "fieldproof", "collector", "run", "--config", str(cpath)]
                )
                kids.append(env.spawn(cmd, rdir / f"collector{c}.log"))
            for cfg in configs:
                topic = f"fieldproof/v1/_collector/{cfg.collector_id}/status"
                if not wait_for_retained("127.0.0.1", broker.port, topic, b'"online": true', 60):
                    raise RuntimeError(f"collector {cfg.collector_id} did not come up; see {rdir}")
        else:
            keys = rdir / "keys.json"
            keys.write_text(
                json.dumps(
                    {gw: pub.hex() for gw, pub in zip(w.gateways, w.public_keys, strict=True)}
                )
            )
            for b in range(procs):
                args = [
                    PY,
                    str(BENCH / "bridge.py"),
                    "--port",
                    str(broker.port),
                    "--influx",
                    env.influx.url,
                    "--database",
                    database,
                    "--keys",
                    str(keys),
                    "--client-id",
                    f"bridge{b}",
                ]
                if procs > 1:
                    args += ["--share-group", "bridge"]
                p = env.spawn(args, rdir / f"bridge{b}.log", stdout=subprocess.PIPE)
                kids.append(p)
                threading.Thread(
                    target=_bridge_reader, args=(p, bridge_state, b), daemon=True
                ).start()
            deadline = time.monotonic() + 60
            while len(bridge_state["ready"]) < procs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bridge did not subscribe; see {rdir}")
                time.sleep(0.05)
        pids = {f"{kind}{i}": p.pid for i, p in enumerate(kids)}
        pids["mosquitto"] = broker.proc.pid if broker.proc else 0
        pids["influxd"] = env.influx.proc.pid if env.influx.proc else 0
        cpu0 = {k: proc_cpu(pid) for k, pid in pids.items()}
        sys0 = system_cpu()
        prof = (
            Profiler(env.py_spy, kids[0].pid, rdir / "profile.txt")
            if profile and env.py_spy
            else None
        )
        out = rdir / "loadgen.json"
        args = [
            PY,
            str(BENCH / "loadgen.py"),
            "--workload",
            str(wpath),
            "--port",
            str(broker.port),
            "--out",
            str(out),
            "--timeout",
            str(timeout),
        ]
        if rate:
            args += ["--rate", str(rate)]
        if limit:
            args += ["--limit", str(limit)]
        if kind == "bridge":
            args.append("--no-receipts")
        lg = subprocess.run(
            args, cwd=ROOT, timeout=timeout + 120, check=False, capture_output=True, text=True
        )
        if lg.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{lg.stderr[-2000:]}")
        res = json.loads(out.read_text())
        if kind == "bridge":
            deadline = time.monotonic() + timeout
            while sum(bridge_state["written"].values()) < n and time.monotonic() < deadline:
                time.sleep(0.05)
            with bridge_state["lock"]:
                done = sum(bridge_state["written"].values()) >= n
                t_end = max(bridge_state["last"].values()) if bridge_state["last"] else None
            if not done:
                t_end = None
        else:
            t_end = res.get("t_all_confirmed")
        cpu1 = {k: proc_cpu(pid) for k, pid in pids.items()}
        sys1 = system_cpu()
        if prof is not None:
            result["profile"] = prof.stop()
        elapsed = (t_end - res["t_start"]) if t_end else None
        wall = (t_end or time.time()) - res["t_start"]
        ours = sum(cpu1[k] - cpu0[k] for k in pids) + res["loadgen_cpu_s"]
        result.update(
            complete=t_end is not None,
            elapsed_s=elapsed,
            wall_s=wall,
            cpu_s={k: cpu1[k] - cpu0[k] for k in pids} | {"loadgen": res["loadgen_cpu_s"]},
            msgs_per_s=(n / elapsed) if elapsed else None,
            readings_per_s=(n * w.readings_per_message / elapsed) if elapsed else None,
            publish_s=res["publish_s"],
            cpu_us_per_msg={k: (cpu1[k] - cpu0[k]) / n * 1e6 for k in pids}
            | {"loadgen": res["loadgen_cpu_s"] / n * 1e6},
            cores_busy=ours / wall if wall > 0 else None,
            other_load_cores=max(0.0, (sys1[0] - sys0[0]) - ours) / wall if wall > 0 else None,
            steal_cores=(sys1[1] - sys0[1]) / wall if wall > 0 else None,
        )
        for key in (
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "receipts",
            "duplicate_confirmations",
            "confirmed",
            "confirmed_per_half_second",
        ):
            if key in res:
                result[key] = res[key]
        if rate and "confirmed_per_half_second" in res:
            # confirmations per second while the load was offered, the first second left out
            bins = res["confirmed_per_half_second"]
            span_bins = int(n / rate * 2)  # half seconds of sending
            steady = bins[2:span_bins] if span_bins >= 6 else bins[: span_bins + 1]
            result["achieved_msgs_per_s_while_sending"] = (
                sum(steady) / (len(steady) / 2) if steady else None
            )
    finally:
        for p in kids:
            env.terminate(p)
        broker.stop()
    # what is where, after the collectors stopped cleanly
    if kind == "collector":
        accepted = readings = log_size = 0
        quarantined: Counter[str] = Counter()
        for cfg in configs:
            db = sqlite3.connect(f"file:{cfg.db_path}?mode=ro", uri=True)
            try:
                m, r = db.execute(
                    "SELECT count(*), coalesce(sum(readings), 0) FROM received"
                ).fetchone()
                accepted += m
                readings += r
                log_size += db.execute("SELECT count(*) FROM fp_log_entries").fetchone()[0]
                for name, v in db.execute("SELECT name, value FROM counters"):
                    if name.startswith("quarantined:"):
                        quarantined[name] += v
            finally:
                db.close()
        result.update(
            accepted_messages=accepted,
            accepted_readings=readings,
            log_entries=log_size,
            registry_entries=len(w.gateways) * len(configs),
            quarantined=dict(quarantined),
        )
    result["influx_points"] = env.influx_points(database)
    result["expected_points"] = n * w.readings_per_message
    env.drop_database(database)
    shutil.rmtree(rdir, ignore_errors=True)
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: runs[0][k] for k in ("kind", "procs", "messages", "readings_per_message", "gateways")
    }
    out["runs"] = len(runs)
    out["variant"] = runs[0].get("variant", "")
    out["complete_runs"] = sum(1 for r in runs if r.get("complete"))
    for key in (
        "msgs_per_s",
        "readings_per_s",
        "cores_busy",
        "other_load_cores",
        "steal_cores",
        "latency_p50_ms",
        "latency_p99_ms",
    ):
        out[key] = median_of(runs, key)
    out["msgs_per_s_all"] = [r.get("msgs_per_s") for r in runs]
    keys = runs[0]["cpu_us_per_msg"].keys()
    out["cpu_us_per_msg"] = {
        k: statistics.median(r["cpu_us_per_msg"][k] for r in runs) for k in keys
    }
    out["all_points_stored"] = all(r["influx_points"] == r["expected_points"] for r in runs)
    if runs[0]["kind"] == "collector":
        out["all_accepted_once"] = all(
            r["accepted_messages"] == r["messages"]
            and r["log_entries"] == r["messages"] + r["registry_entries"]
            for r in runs
        )
    return out


# ------------------------------------------------------------------------------- gateway


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


# ------------------------------------------------------------------------------- scale


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


# ------------------------------------------------------------------------------- log


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


# ------------------------------------------------------------------------------- report


def fmt(v: Any, spec: str = "{:,.0f}") -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and v != v:
        return "—"
    return spec.format(v)


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "# fieldproof benchmark results",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if res['quick'] else ''}` on "
        f"{m['date_utc']} UTC"
        + (" (QUICK mode: small counts, one run each; noisy)." if res["quick"] else "."),
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores ({m['virtualization']}), "
        f"RAM {m['ram_gib']} GiB, Linux {m['kernel']}",
        f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- load average when started: {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}",
        "",
    ]
    v = res.get("verify")
    if v:
        ceiling = v["ed25519_verify_per_s_two_processes"]
        lines += [
            "## Ceiling: signature checks",
            "",
            "| what | per second |",
            "|---|---:|",
            "| Ed25519 verify, one core (libsodium via PyNaCl: what the product uses) |"
            f" {fmt(v['ed25519_verify_per_s_one_core'])} |",
            f"| Ed25519 verify, two processes at once (the two-core ceiling) | {fmt(ceiling)} |",
            "| for reference: OpenSSL via `cryptography`, one core / two processes |"
            f" {fmt(v.get('openssl_verify_per_s_one_core'))} /"
            f" {fmt(v.get('openssl_verify_per_s_two_processes'))} |",
            "| `wire.decode_message`, 1 reading, one core |"
            f" {fmt(v['decode_message_per_s_1_reading'])} |",
            "| `wire.decode_message`, 10 readings, one core |"
            f" {fmt(v['decode_message_per_s_10_readings'])} |",
            "",
        ]
    ing = res.get("ingest")
    if ing:
        ceiling = res["verify"]["ed25519_verify_per_s_two_processes"] if v else None
        lines += [
            "## Collector ingest, end to end",
            "",
            "Published → verified → InfluxDB + evidence log (one SQLite commit, fsync) → acked →"
            " receipt at the publisher. Throughput = messages / (last receipt − first publish),"
            f" median of the runs; {ing['gateways']} gateway ids, messages pre-signed."
            " CPU columns: µs of CPU per message in each process (median).",
            "",
            "| pipeline | readings/msg | processes | msgs/s | readings/s | of 2-core verify ceiling"
            " | p50 / p99 latency at ½ load | CPU µs/msg: ingest procs / broker / influxd / loadgen"
            " | runs: msgs/s | stored = sent |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for s in ing["summaries"]:
            cpu = s["cpu_us_per_msg"]
            ingest_cpu = sum(val for k, val in cpu.items() if k.startswith(s["kind"]))
            lat = s.get("latency")
            lat_s = (
                f"{fmt(lat['latency_p50_ms'], '{:,.1f}')} /"
                f" {fmt(lat['latency_p99_ms'], '{:,.1f}')} ms"
                f" @ {fmt(lat['rate_offered'])}/s"
                if lat
                else "—"
            )
            share = (s["msgs_per_s"] / ceiling * 100) if (ceiling and s["msgs_per_s"]) else None
            name = (
                "collector (all durability rules)" if s["kind"] == "collector" else "naive bridge"
            )
            if s.get("variant"):
                name = f"collector, what-if: {s['variant']}"
            ok = s["all_points_stored"] and s.get("all_accepted_once", True)
            lines.append(
                f"| {name} | {s['readings_per_message']} | {s['procs']} | {fmt(s['msgs_per_s'])} |"
                f" {fmt(s['readings_per_s'])} | {fmt(share, '{:.0f} %')} | {lat_s} |"
                f" {ingest_cpu:,.0f} / {cpu.get('mosquitto', 0):,.0f}"
                f" / {cpu.get('influxd', 0):,.0f}"
                f" / {cpu.get('loadgen', 0):,.0f} |"
                f" {', '.join(fmt(x) for x in s['msgs_per_s_all'])} | {'yes' if ok else 'NO'} |"
            )
        lines.append("")
        for r in ing.get("ratios", []):
            lines.append(f"- {r}")
        lines.append("")
        other = [s.get("other_load_cores") for s in ing["summaries"]]
        if any(o and o > 0.1 for o in other):
            lines += [
                "Other processes on the machine took up to "
                f"{max(o or 0 for o in other):.2f} cores during these runs (shared machine):"
                " figures are lower than on an idle machine.",
                "",
            ]
    for readings, prof in (res.get("profiles") or {}).items():
        if not prof or "inclusive_percent" not in prof:
            continue
        lines += [
            "## Where a saturated collector's time goes"
            f" (py-spy, 1 process, {readings} reading(s)/msg)",
            "",
            f"{prof['samples']:,} samples; share of all CPU samples of the collector process"
            " (inclusive; buckets overlap where one calls another).",
            "",
            "| bucket | % |",
            "|---|---:|",
        ]
        for label, pct in prof["inclusive_percent"].items():
            lines.append(f"| {label} | {pct} |")
        lines += [
            "",
            "Threads: " + ", ".join(f"{k} {v} %" for k, v in prof["by_thread_percent"].items()),
            "",
            "Top self time:",
            "",
            "| function | % |",
            "|---|---:|",
        ]
        for name, pct in prof["top_self_percent"][:15]:
            lines.append(f"| `{name}` | {pct} |")
        lines.append("")
    gws = res.get("gateway")
    if gws:
        lines += [
            "## Gateway cost (one GatewayAgent process, simulated station: 5 readings per round)",
            "",
            "CPU = user+system of the agent process while sampling, signing, spooling (fsync),"
            " publishing and deleting on receipt, divided by confirmed readings. Pi 4 projection"
            f" = ×{PI4_FACTOR:.0f} (see PI4_FACTOR in benchmarks/run.py).",
            "",
            "| rounds/msg | readings confirmed | CPU µs/reading | CPU µs/message | peak RSS MiB"
            " | sign µs/msg | spool commit µs (CPU / wall) | storage KiB written/msg"
            " | Pi 4: ms CPU/msg | Pi 4: CPU % at 60 s |",
            "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for g in gws:
            lines.append(
                f"| {g['rounds_per_message']} | {g['confirmed_readings']:,} |"
                f" {g['cpu_us_per_reading']:,.0f} | {g['cpu_us_per_message']:,.0f} |"
                f" {g['peak_rss_kib'] / 1024:,.1f} | {g['sign_5_readings_cpu_us']:,.0f} |"
                f" {g['spool_add_cpu_us']:,.0f} / {g['spool_add_wall_us']:,.0f} |"
                f" {g['written_kib_per_message']:,.1f} |"
                f" {g['pi4_cpu_ms_per_message']:,.1f} | {g['pi4_cpu_percent_at_60s']:.3f} |"
            )
        idle = [g["idle_cpu_percent"] for g in gws if "idle_cpu_percent" in g]
        if idle:
            lines += [
                "",
                f"Idle agent (nothing to send): {idle[0]:.2f} % of one core here,"
                f" ≈ {idle[0] * PI4_FACTOR:.1f} % of a Pi 4 core.",
            ]
        lines.append("")
    sc = res.get("scale")
    if sc:
        lines += [
            "## Scale curve (1 collector process, 5 readings per message)",
            "",
            "| gateways | interval s | offered msgs/s | confirmed msgs/s while sending |"
            " p50 / p99 latency ms | collector CPU µs/msg | collector cores busy | complete |",
            "|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for r in sc["realistic"] + sc["saturation"]:
            cores = r["cpu_us_per_msg"].get("collector0", 0) * r["offered_msgs_per_s"] / 1e6
            lines.append(
                f"| {r['gateways']:,} | {r['interval_s']:.2f} | {r['offered_msgs_per_s']:,.1f} |"
                f" {fmt(r.get('achieved_msgs_per_s_while_sending'), '{:,.1f}')} |"
                f" {fmt(r.get('latency_p50_ms'), '{:,.0f}')} /"
                f" {fmt(r.get('latency_p99_ms'), '{:,.0f}')} |"
                f" {fmt(r['cpu_us_per_msg'].get('collector0'))} | {cores:.2f} |"
                f" {'yes' if r['complete'] else 'no (backlog at timeout)'} |"
            )
        probes = [
            ("as it is", sc.get("capacity_probe")),
            ("what-if batched-agronomy", sc.get("capacity_probe_batched_agronomy")),  # old runs
        ]
        lines += [""] + [
            f"Capacity for this traffic ({p['gateways']:,} gateways, as fast as possible),"
            f" {label}: {fmt(p.get('msgs_per_s'))} msgs/s"
            f" ({fmt(p.get('readings_per_s'))} readings/s), collector"
            f" {p['cpu_s'].get('collector0', 0) / p['wall_s']:.2f} cores busy."
            for label, p in probes
            if p and p.get("wall_s")
        ]
        lines += [
            "",
            "Registry cache (full reload every 10 min, changed devices every 5 s):",
            "",
            "| devices | full reload ms | refresh ms, nothing changed | refresh ms, 10 changed"
            " | share of one core |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in sc["registry_cache"]:
            lines.append(
                f"| {r['devices']:,} | {r['reload_ms']:,.1f} |"
                f" {fmt(r.get('refresh_idle_ms'), '{:.3f}')} |"
                f" {fmt(r.get('refresh_10_changed_ms'), '{:.3f}')} |"
                f" {r['share_of_one_core_percent']:.2f} % |"
            )
        lines.append("")
    vb = res.get("verifier")
    if vb and "verify_1w_msgs_per_s" in vb:
        raw1 = vb.get("raw_ed25519_libsodium_1core_per_s") or vb.get("raw_ed25519_1core_per_s")
        raw2 = vb.get("raw_ed25519_libsodium_2w_per_s") or vb.get("raw_ed25519_2w_per_s")
        lines += [
            f"## Verifier: a {vb.get('messages', 0):,}-message bundle, offline"
            " (benchmarks/bench_verify.py)",
            "",
            "| workers | verified msgs/s | raw Ed25519 verify/s (libsodium), same run | ratio |",
            "|---:|---:|---:|---:|",
            f"| 1 | {fmt(vb.get('verify_1w_msgs_per_s'))} | {fmt(raw1)} |"
            f" {fmt(vb.get('verify_vs_raw_1w'), '{:.2f}')} |",
            f"| 2 | {fmt(vb.get('verify_2w_msgs_per_s'))} | {fmt(raw2)} |"
            f" {fmt(vb.get('verify_vs_raw_same_workers'), '{:.2f}')} |",
            "",
        ]
    elif vb:
        lines += ["## Verifier", "", f"not measured: {vb.get('error')}", ""]
    lg = res.get("log")
    if lg and "results" in lg:
        from types import SimpleNamespace

        from benchmarks.bench_log import markdown as log_markdown

        lines += [
            "## Evidence log (benchmarks/bench_log.py)",
            "",
            log_markdown(lg["results"], lg.get("ratios", []), SimpleNamespace(**lg["meta"])),
            "",
        ]
    elif lg:
        lines += ["## Evidence log", "", f"not measured: {lg.get('error')}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def find_py_spy() -> str | None:
    for c in (shutil.which("py-spy"), str(Path(PY).parent / "py-spy"), "/tmp/fp-tools/bin/py-spy"):
        if c and os.access(c, os.X_OK):
            return c
    return None


@contextlib.contextmanager
def section(name: str, results: dict[str, Any], errors: list[str]) -> Iterator[None]:
    t = time.monotonic()
    log(f"== {name}")
    try:
        yield
    except Exception as exc:  # a failed section is reported, the others still run
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
        log(f"!! {name} failed: {exc}")
    results.setdefault("section_seconds", {})[name] = round(time.monotonic() - t, 1)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="< 3 minutes, small counts, noisy")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; quick 1)")
    ap.add_argument(
        "--only",
        default="",
        help="comma list: verify,ingest,profile,gateway,scale,log,verifier",
    )
    ap.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy profile of a saturated collector (default: on unless --quick)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    quick = args.quick
    runs = args.runs or (1 if quick else 3)
    only = set(filter(None, args.only.split(","))) or {
        "verify",
        "ingest",
        "profile",
        "gateway",
        "scale",
        "log",
        "verifier",
    }
    if args.profile is False or (args.profile is None and quick):
        only.discard("profile")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fieldproof-bench-"))
    started = time.monotonic()
    results: dict[str, Any] = {"quick": quick, "runs_per_figure": runs, "machine": machine()}
    errors: list[str] = []
    results["errors"] = errors
    influx = InfluxDB(work / "influxdb")
    env = Env(work, influx, find_py_spy(), quiet_wait_s=0.0 if quick else 60.0)
    if "profile" in only and env.py_spy is None:
        errors.append("profile: py-spy not found (pip install py-spy)")
        only.discard("profile")

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (args.out / "results.md").write_text(markdown(results))

    try:
        influx.start()
        if "verify" in only:
            with section("verify", results, errors):
                results["verify"] = bench_verify(runs if not quick else 1, 1.0 if quick else 2.0)
                save()
        capacity: float | None = None
        if "ingest" in only or "profile" in only:
            with section("ingest", results, errors):
                capacity = run_ingest(env, results, quick, runs, only)
                save()
        if "gateway" in only:
            with section("gateway", results, errors):
                results["gateway"] = bench_gateway(env, quick)
                save()
        if "scale" in only:
            with section("scale", results, errors):
                results["scale"] = bench_scale(env, quick, capacity)
                save()
        if "verifier" in only:
            with section("verifier", results, errors):
                results["verifier"] = bench_verifier(quick, runs, work / "bench_verify.json")
                save()
        if "log" in only:
            with section("log", results, errors):
                results["log"] = bench_log(quick, work / "bench_log.json")
                save()
    finally:
        env.kill_all()
        influx.stop()
        results["total_seconds"] = round(time.monotonic() - started, 1)
        results["machine"]["loadavg_at_end"] = os.getloadavg()
        save()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    if errors:
        print("\nERRORS:\n" + "\n".join(errors), file=sys.stderr)
        sys.exit(1)


def run_ingest(
    env: Env, results: dict[str, Any], quick: bool, runs: int, only: set[str]
) -> float | None:
    cache = env.work / "workloads"
    gateways = 200
    plans: list[tuple[int, int]] = [
        (1, 15_000 if quick else 120_000),
        (10, 3_000 if quick else 30_000),
    ]
    summaries = []
    ratios = []
    capacity_r1: float | None = None
    for readings, n in plans:
        log(f"signing {n:,} messages of {readings} reading(s) for {gateways} gateways")
        w, wpath = wl.build("ingest", gateways, n, readings, 60.0, cache_dir=cache)
        if "ingest" not in only:
            log("profiling a saturated collector with py-spy")
            r = ingest_run(env, w, wpath, kind="collector", procs=1, profile=True)
            results.setdefault("profiles", {})[str(readings)] = r.get("profile")
            continue
        by_kind: dict[tuple[str, int], dict[str, Any]] = {}
        for kind, procs in (("collector", 1), ("collector", 2), ("bridge", 1)):
            rs = []
            for i in range(runs):
                log(f"ingest: {kind} x{procs}, {readings} reading(s)/msg, run {i + 1}/{runs}")
                rs.append(ingest_run(env, w, wpath, kind=kind, procs=procs))
                log(f"   -> {fmt(rs[-1].get('msgs_per_s'))} msgs/s")
            s = summarise_runs(rs)
            s["detail"] = rs
            by_kind[(kind, procs)] = s
            summaries.append(s)
        one, two, bridge = (
            by_kind[("collector", 1)],
            by_kind[("collector", 2)],
            by_kind[("bridge", 1)],
        )
        if readings == 1:
            capacity_r1 = one["msgs_per_s"]
        # latency at half the single-collector capacity
        for s in (one, two):
            cap = s["msgs_per_s"]
            if not cap:
                continue
            rate = round(cap / 2, -1)
            limit = int(rate * (5 if quick else 15))
            log(f"latency: collector x{s['procs']} at {rate:.0f} msgs/s")
            lat = ingest_run(
                env,
                w,
                wpath,
                kind="collector",
                procs=s["procs"],
                rate=rate,
                limit=min(limit, len(w.messages)),
            )
            s["latency"] = {
                k: lat.get(k)
                for k in ("latency_p50_ms", "latency_p99_ms", "latency_max_ms", "rate_offered")
            }
        if one["msgs_per_s"] and two["msgs_per_s"]:
            ratios.append(
                f"{readings} reading(s)/msg: the second collector process adds "
                f"{(two['msgs_per_s'] / one['msgs_per_s'] - 1) * 100:+.0f} % "
                f"({fmt(one['msgs_per_s'])} → {fmt(two['msgs_per_s'])} msgs/s)"
            )
        if bridge["msgs_per_s"] and one["msgs_per_s"]:
            best = max(one["msgs_per_s"], two["msgs_per_s"] or 0)
            ratios.append(
                f"{readings} reading(s)/msg: the collector's best is "
                f"{best / bridge['msgs_per_s'] * 100:.0f} % of the naive bridge "
                f"({fmt(bridge['msgs_per_s'])} msgs/s)"
            )
        for variant in VARIANTS:
            for procs in (1, 2):
                rs = []
                for i in range(runs):
                    log(f"ingest: collector x{procs} what-if {variant}, run {i + 1}/{runs}")
                    rs.append(
                        ingest_run(env, w, wpath, kind="collector", procs=procs, variant=variant)
                    )
                s = summarise_runs(rs)
                s["variant"] = variant
                s["detail"] = rs
                summaries.append(s)
                base = by_kind[("collector", procs)]["msgs_per_s"]
                if base and s["msgs_per_s"]:
                    ratios.append(
                        f"{readings} reading(s)/msg, {procs} collector(s): what-if {variant}"
                        f" gives {s['msgs_per_s'] / base:.1f}x"
                        f" ({fmt(base)} → {fmt(s['msgs_per_s'])} msgs/s)"
                    )
        if "profile" in only:
            log(f"profiling a saturated collector with py-spy ({readings} reading(s)/msg)")
            r = ingest_run(env, w, wpath, kind="collector", procs=1, profile=True)
            results.setdefault("profiles", {})[str(readings)] = r.get("profile")
    results["ingest"] = {"gateways": gateways, "summaries": summaries, "ratios": ratios}
    return capacity_r1


if __name__ == "__main__":
    main()
