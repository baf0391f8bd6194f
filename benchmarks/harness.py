"""What every benchmark shares: the machine it ran on, CPU accounting, the services it
starts (Mosquitto, InfluxDB, collectors) and a profiler."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks import workload as wl  # noqa: E402
from fieldproof.services import InfluxDB  # noqa: E402

PY = sys.executable


BENCH = Path(__file__).resolve().parent


PI4_FACTOR = 8.0
"""How much slower a Raspberry Pi 4 (Cortex-A72, 1.5 GHz) runs this Python code than one core
of the benchmark machine. Python-heavy work on an A72 runs 6-8x slower than on a current x86
server core (published pyperformance / single-core CPU benchmark comparisons); we take the
pessimistic end. Ed25519 in OpenSSL has no A72-specific assembly, so signing is no better."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def write_collector_config(
    cdir: Path,
    cid: str,
    port: int,
    influx_url: str,
    database: str,
    share_group: str = "bench",
    *,
    api: str = "v1",
    token_env: str | None = None,
) -> Path:
    """A collector config writing to ``database``: through ``/write`` (``api="v1"``) or through
    ``/api/v2/write`` (``api="v2"``, bucket = ``database``; ``token_env`` names the variable
    holding the token, none sent without it: InfluxDB 1.8 without auth)."""
    if api not in ("v1", "v2"):
        raise ValueError(f"api must be 'v1' or 'v2', not {api!r}")
    cdir.mkdir(parents=True, exist_ok=True)
    path = cdir / "collector.toml"
    if api == "v1":
        influx = f'api = "v1"\nurl = "{influx_url}"\ndatabase = "{database}"\n'
    else:
        influx = f'api = "v2"\nurl = "{influx_url}"\nbucket = "{database}"\n'
        if token_env:
            influx += f'token_env = "{token_env}"\n'
    path.write_text(
        f"""collector_id = "{cid}"
data_dir = "{cdir}"
share_group = "{share_group}"

[mqtt]
host = "127.0.0.1"
port = {port}

[influx]
{influx}"""
    )
    return path


@dataclass
class Env:
    work: Path
    influx: InfluxDB
    py_spy: str | None
    quiet_wait_s: float = 60.0
    runs_done: int = 0
    #: part of every run directory's name: two Envs sharing ``work`` (one per InfluxDB
    #: server) never pick the same directory
    tag: str = ""
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
        d = self.work / f"run{self.tag}{self.runs_done:03d}-{label}"
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
