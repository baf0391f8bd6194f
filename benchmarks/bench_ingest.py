"""Collector ingest end to end against a naive bridge, medians of several runs, and
"what if" variants of the collector measured before anyone writes them."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


import httpx  # noqa: E402

from benchmarks import workload as wl  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    BENCH,
    PY,
    Env,
    Profiler,
    log,
    proc_cpu,
    system_cpu,
    write_collector_config,
)
from benchmarks.report import fmt  # noqa: E402
from fieldproof.config import load_collector_config  # noqa: E402
from fieldproof.mqtt import wait_for_retained  # noqa: E402
from fieldproof.services import Mosquitto  # noqa: E402

# Measured "what if" for a proposed product change: a name -> Python bootstrap that patches the
# collector in its own process (the product code is not modified) and then runs
# ``fieldproof collector run --config sys.argv[1]``. ingest_run(..., variant=NAME) uses it.
# The first one, "batched-agronomy" (agronomy state committed per batch, not per message),
# measured 2.7-3.2x at 10 readings/msg and became the product's behaviour in 7631181; add the
# next proposal here to measure it before anyone writes it.
VARIANTS: dict[str, str] = {}


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
    api: str = "v1",
) -> dict[str, Any]:
    """One timed run on a fresh broker, fresh collector databases and a fresh InfluxDB
    database. ``kind`` is "collector" or "bridge". ``api`` is the collector's ``[influx] api``:
    "v1" (``/write``) or "v2" (``/api/v2/write`` through influxdb-client, the database as the
    bucket: InfluxDB 1.8+); the bridge always writes through ``/write``."""
    if api != "v1" and kind != "collector":
        raise ValueError("only the collector writes through the v2 API")
    busy_before = env.wait_quiet()
    rdir = env.next_dir(f"{kind}{procs}")
    broker = Mosquitto(rdir / "mosquitto")
    broker.start()
    database = f"bench_{env.runs_done}" + ("" if api == "v1" else f"_{api}")
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
        "api": api,
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
                    api=api,
                    token_env=_token_env(env) if api == "v2" else None,
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
    out["api"] = runs[0].get("api", "v1")
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


INGEST_GATEWAYS = 200


def ingest_plans(quick: bool) -> list[tuple[int, int]]:
    """(readings per message, messages) of the ingest workloads."""
    return [
        (1, 15_000 if quick else 120_000),
        (10, 3_000 if quick else 30_000),
    ]


TOKEN_ENV = "FIELDPROOF_BENCH_INFLUX_TOKEN"


def _token_env(env: Env) -> str | None:
    """The variable naming the v2 token for collectors started by ``env``: set in this
    process's environment (children inherit it) when the server wants a token (InfluxDB 1.8
    with auth: ``user:password``); None without auth, so no token is sent."""
    token = getattr(env.influx, "token", "")
    if not token:
        return None
    os.environ[TOKEN_ENV] = token
    return TOKEN_ENV


def run_ingest(
    env: Env, results: dict[str, Any], quick: bool, runs: int, only: set[str]
) -> float | None:
    cache = env.work / "workloads"
    gateways = INGEST_GATEWAYS
    plans = ingest_plans(quick)
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


def _server_version(url: str) -> str:
    try:
        r = httpx.get(f"{url}/ping", timeout=5)
    except httpx.HTTPError as exc:
        return f"? ({type(exc).__name__})"
    return str(r.headers.get("X-Influxdb-Version", "?"))


def run_influx_api(env: Env, quick: bool, runs: int) -> dict[str, Any]:
    """The same collector ingest workload (1 and 10 readings per message, one collector
    process, the ingest section's message counts) written through the v1 API (``/write``)
    and through the v2 API (``/api/v2/write`` via influxdb-client) of ONE InfluxDB server
    (``env.influx``, an InfluxDB 1.8 that has both), each run into its own fresh database.
    The two APIs alternate run by run (v1 v2, then v2 v1, ...) so a drifting machine load
    does not favour one; figures are medians over ``runs`` runs per API."""
    cache = env.work / "workloads"
    gateways = INGEST_GATEWAYS
    out: dict[str, Any] = {
        "server": type(env.influx).__name__,
        "server_version": _server_version(env.influx.url),
        "server_auth": bool(getattr(env.influx, "token", "")),
        "gateways": gateways,
        "summaries": [],
        "comparisons": [],
    }
    for readings, n in ingest_plans(quick):
        log(f"signing {n:,} messages of {readings} reading(s) for {gateways} gateways")
        w, wpath = wl.build("ingest", gateways, n, readings, 60.0, cache_dir=cache)
        by_api: dict[str, list[dict[str, Any]]] = {"v1": [], "v2": []}
        for i in range(runs):
            order = ("v1", "v2") if i % 2 == 0 else ("v2", "v1")
            for api in order:
                log(
                    f"influx-api: collector x1 via {api}, {readings} reading(s)/msg,"
                    f" run {i + 1}/{runs}"
                )
                r = ingest_run(env, w, wpath, kind="collector", procs=1, api=api)
                by_api[api].append(r)
                log(f"   -> {fmt(r.get('msgs_per_s'))} msgs/s")
        sums: dict[str, dict[str, Any]] = {}
        for api, rs in by_api.items():
            s = summarise_runs(rs)
            s["detail"] = rs
            sums[api] = s
            out["summaries"].append(s)
        v1, v2 = sums["v1"], sums["v2"]

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        c1 = v1["cpu_us_per_msg"].get("collector0")
        c2 = v2["cpu_us_per_msg"].get("collector0")
        i1 = v1["cpu_us_per_msg"].get("influxd")
        i2 = v2["cpu_us_per_msg"].get("influxd")
        out["comparisons"].append(
            {
                "readings_per_message": readings,
                "messages": n,
                "v2_over_v1_msgs_per_s": ratio(v2["msgs_per_s"], v1["msgs_per_s"]),
                "v2_over_v1_readings_per_s": ratio(v2["readings_per_s"], v1["readings_per_s"]),
                "v2_over_v1_collector_cpu_us_per_msg": ratio(c2, c1),
                "v2_minus_v1_collector_cpu_us_per_msg": (c2 - c1)
                if c1 is not None and c2 is not None
                else None,
                "v2_over_v1_influxd_cpu_us_per_msg": ratio(i2, i1),
            }
        )
    return out
