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
* one bad gateway (``chaos``, benchmarks/bench_chaos.py): honest throughput and collector CPU
  calm, then while one enrolled gateway runs every attack of issue 13, as ratios;
* with --profile (default in full mode), a py-spy profile of a saturated collector;
* InfluxDB write API (``influx-api``): the same collector ingest (1 collector, 1 and 10
  readings per message) through the v1 API (``/write``) and through the v2 API
  (``/api/v2/write``, influxdb-client) of one InfluxDB 1.8 (fieldproof.services.InfluxDB18,
  built by scripts/peers), each run into its own database, and the v2/v1 ratios.

Writes ``results.json`` and ``results.md`` into --out. ``--quick`` is a < 3 minute sanity run
with small counts and one run per figure; its numbers are noisy."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from benchmarks.bench_chaos import bench_chaos  # noqa: E402
from benchmarks.bench_fleet import bench_gateway, bench_log, bench_scale, bench_verifier  # noqa: E402
from benchmarks.bench_ingest import run_influx_api, run_ingest  # noqa: E402
from benchmarks.bench_rates import bench_verify  # noqa: E402
from benchmarks.harness import BENCH, Env, find_py_spy, machine, section  # noqa: E402
from benchmarks.report import markdown  # noqa: E402
from fieldproof.services import InfluxDB, InfluxDB18, ServiceError  # noqa: E402

# sections that write through the Debian InfluxDB (1.x) the harness starts
NEEDS_INFLUX = {"ingest", "profile", "gateway", "scale"}


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
        help="comma list: verify,ingest,profile,gateway,scale,log,verifier,influx-api,chaos",
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
    explicit = set(filter(None, args.only.split(",")))
    only = explicit or {
        "verify",
        "ingest",
        "profile",
        "gateway",
        "scale",
        "log",
        "verifier",
        "influx-api",
        "chaos",
    }
    if args.profile is False or (args.profile is None and quick):
        only.discard("profile")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fieldproof-bench-"))
    started = time.monotonic()
    results: dict[str, Any] = {"quick": quick, "runs_per_figure": runs, "machine": machine()}
    errors: list[str] = []
    results["errors"] = errors
    quiet_wait_s = 0.0 if quick else 60.0
    py_spy = find_py_spy()
    influx = InfluxDB(work / "influxdb") if only & NEEDS_INFLUX else None
    env = Env(work, influx, py_spy, quiet_wait_s=quiet_wait_s) if influx else None
    if "profile" in only and py_spy is None:
        errors.append("profile: py-spy not found (pip install py-spy)")
        only.discard("profile")
    influx18: InfluxDB18 | None = None
    if "influx-api" in only:
        try:
            influx18 = InfluxDB18(work / "influxdb18")
        except ServiceError as exc:  # scripts/peers has not built influxd 1.8
            only.discard("influx-api")
            if "influx-api" in explicit:
                errors.append(f"influx-api: {exc}")
            else:
                results["skipped"] = {"influx-api": str(exc)}
                print(f"skipping influx-api: {exc}", file=sys.stderr)

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (args.out / "results.md").write_text(markdown(results))

    try:
        if influx is not None:
            influx.start()
        if "verify" in only:
            with section("verify", results, errors):
                results["verify"] = bench_verify(runs if not quick else 1, 1.0 if quick else 2.0)
                save()
        capacity: float | None = None
        if "ingest" in only or "profile" in only:
            with section("ingest", results, errors):
                assert env is not None
                capacity = run_ingest(env, results, quick, runs, only)
                save()
        if influx18 is not None:
            with section("influx-api", results, errors):
                # its own server and Env; same work directory, so the signed workloads of
                # the ingest section are reused
                env18 = Env(work, influx18, py_spy, quiet_wait_s=quiet_wait_s, tag="i18-")
                try:
                    influx18.start()
                    results["influx_api"] = run_influx_api(env18, quick, runs)
                finally:
                    env18.kill_all()
                    influx18.stop()
                save()
        if "gateway" in only:
            with section("gateway", results, errors):
                assert env is not None
                results["gateway"] = bench_gateway(env, quick)
                save()
        if "scale" in only:
            with section("scale", results, errors):
                assert env is not None
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
        if "chaos" in only:
            with section("chaos", results, errors):
                results["chaos"] = bench_chaos(quick, work)
                save()
    finally:
        if env is not None:
            env.kill_all()
        if influx is not None:
            influx.stop()
        if influx18 is not None:
            influx18.stop()
        results["total_seconds"] = round(time.monotonic() - started, 1)
        results["machine"]["loadavg_at_end"] = os.getloadavg()
        save()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    if errors:
        print("\nERRORS:\n" + "\n".join(errors), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
