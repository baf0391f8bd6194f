"""What one bad gateway costs the honest fleet (issue 13): honest throughput (readings/s
stored) and collector CPU in one run, first calm, then while one enrolled gateway runs every
attack of tests/support/chaos.py (poisoned retained status, client-id takeover attempts,
replay and conflicting-seq floods, oversized/nested/garbage payloads, enrollment spam).

The rig is the chaos test's: the shipped broker configuration with TLS client certificates
from the project's CA, a real collector process, real gateway processes. The honest gateways
publish at a fixed interval, so "throughput" here is whether the collector keeps pace with
them under attack (ratio 1.0 = it does), and the CPU ratio is what the attack costs it.

    python benchmarks/bench_chaos.py [--quick] [--json out.json]"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import log, proc_cpu, system_cpu  # noqa: E402
from tests.support.chaos import ChaosSite, start_site  # noqa: E402
from tests.support.chaos import attack as run_attack  # noqa: E402

HONEST_GATEWAYS = 3
#: honest gateways' reading interval: 3 × 20 messages/s
HONEST_INTERVAL_S = 0.05
#: no pause between attack rounds: as hard as one connection waiting for PUBACKs can push
ROUND_PAUSE_S = 0.0
SPAM_PAUSE_S = 0.05


def _phase(site: ChaosSite, honest: list[str], seconds: float) -> dict[str, float]:
    """Readings stored, collector CPU and machine CPU over ``seconds``."""
    assert site.collector is not None
    pid = site.collector.pid
    stored0, cpu0, (busy0, _) = site.stored_readings(honest), proc_cpu(pid), system_cpu()
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    stored1, cpu1, (busy1, _) = site.stored_readings(honest), proc_cpu(pid), system_cpu()
    readings = stored1 - stored0
    cpu = cpu1 - cpu0
    return {
        "seconds": round(elapsed, 1),
        "honest_readings_stored": readings,
        "honest_readings_per_s": readings / elapsed,
        "collector_cpu_s": round(cpu, 2),
        "collector_cores": cpu / elapsed,
        "collector_cpu_us_per_honest_reading": 1e6 * cpu / readings if readings else float("nan"),
        "machine_busy_cores": (busy1 - busy0) / elapsed,
    }


def bench_chaos(quick: bool, work: Path) -> dict[str, Any]:
    """Calm phase, then attack phase, each ``seconds`` long, on one running stack."""
    seconds = 10.0 if quick else 60.0
    site = start_site(work / "chaos", HONEST_GATEWAYS, HONEST_INTERVAL_S)
    try:
        site.start_collector()
        site.start_gateways()
        honest = [g.gateway_id for g in site.honest]
        deadline = time.monotonic() + 60
        while site.stored_readings(honest) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # past the gateways' start-up burst
        log(f"chaos: calm phase, {seconds:.0f} s")
        calm = _phase(site, honest, seconds)
        log(f"chaos: attack phase, {seconds:.0f} s")
        with run_attack(site, honest, ROUND_PAUSE_S, SPAM_PAUSE_S) as running:
            attack = _phase(site, honest, seconds)
        attacker, spammer = running.attacker, running.spammer
        hostile_messages = attacker.accepted + sum(attacker.quarantined.values())
        attack_load: dict[str, Any] = {
            "hostile_messages_per_s": hostile_messages / attack["seconds"],
            "hostile_status_per_s": sum(attacker.status_ignored.values()) / attack["seconds"],
            "takeover_attempts": sum(attacker.takeovers.values()),
            "enrollment_requests_per_s": spammer.sent / attack["seconds"],
            "enrollment_answers": {str(k): v for k, v in sorted(spammer.answers.items())},
        }
        alive = site.collector is not None and site.collector.poll() is None
    finally:
        site.close()
    return {
        "honest_gateways": HONEST_GATEWAYS,
        "honest_interval_s": HONEST_INTERVAL_S,
        "calm": calm,
        "attack": attack | attack_load,
        "throughput_ratio": attack["honest_readings_per_s"] / calm["honest_readings_per_s"],
        "collector_cpu_ratio": attack["collector_cores"] / calm["collector_cores"],
        "collector_alive": alive,
    }


def markdown(ch: dict[str, Any] | None) -> list[str]:
    """The results.md section (benchmarks/report.py)."""
    if not ch:
        return []
    if "error" in ch:
        return ["## One bad gateway", "", f"not measured: {ch['error']}", ""]
    calm, attack = ch["calm"], ch["attack"]

    def row(name: str, p: dict[str, Any]) -> str:
        return (
            f"| {name} | {p['seconds']:.0f} | {p['honest_readings_per_s']:,.1f} |"
            f" {p['collector_cores']:.3f} | {p['collector_cpu_us_per_honest_reading']:,.0f} |"
            f" {p['machine_busy_cores']:.2f} |"
        )

    return [
        "## One bad gateway (benchmarks/bench_chaos.py)",
        "",
        f"{ch['honest_gateways']} honest gateway processes (one message every"
        f" {ch['honest_interval_s']} s each) on the shipped TLS/ACL broker, one collector"
        " process; then one enrolled gateway attacks at"
        f" {attack['hostile_messages_per_s']:,.0f} hostile messages/s,"
        f" {attack['hostile_status_per_s']:,.1f} poisoned statuses/s,"
        f" {attack['takeover_attempts']} client-id takeover attempts and"
        f" {attack['enrollment_requests_per_s']:,.1f} enrollment requests/s.",
        "",
        "| phase | s | honest readings/s stored | collector cores | collector CPU µs per"
        " honest reading | machine busy cores |",
        "|---|---:|---:|---:|---:|---:|",
        row("calm", calm),
        row("attack", attack),
        "",
        f"Attack / calm: honest throughput **{ch['throughput_ratio']:.2f}**, collector CPU"
        f" **{ch['collector_cpu_ratio']:.2f}**; collector still running:"
        f" {'yes' if ch['collector_alive'] else 'NO'}.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 s phases instead of 60 s")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fieldproof-chaos-") as work:
        res = bench_chaos(args.quick, Path(work))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))
    print("\n".join(markdown(res)))


if __name__ == "__main__":
    main()
