"""One bad gateway must not stop the fleet (issue 13, "Beyond the list"), performed on the real
parts: the shipped broker configuration with TLS client certificates from the project's CA, a
real collector process writing a real InfluxDB, honest gateway processes enrolled as a
technician enrolls them, and one enrolled gateway turned hostile (valid certificate, valid
signing key) that for ATTACK_S seconds runs every attack of the issue at once:

- poisoned retained status (wrong types, 1e400, 2000-deep JSON, bytes, oversized, escapes);
- client-id takeover attempts as ``collector-1`` and as an honest gateway;
- replay floods and conflicting-seq floods of its own accepted messages;
- oversized payloads, 60,000-deep CBOR nesting, garbage bytes;
- enrollment spam (valid, escape-laden, garbage, oversized requests) against the endpoint.

Afterwards: every honest reading stored exactly once (InfluxDB, the collector's database and
the evidence log), the collector process never exited nor lost its broker connection, each
rejection counter equals what the attacker sent (by reason), the honest spools drained."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo import influx_counts
from tests.support.chaos import (
    COLLECTOR_ID,
    REFUSAL_BY_STATUS,
    ChaosSite,
    attack,
    start_site,
)
from tests.support.stack import wait_until

pytestmark = pytest.mark.integration

#: how long the attack runs while the honest gateways deliver
ATTACK_S = 60.0
HONEST_GATEWAYS = 3
#: pause between two attack rounds and between two enrollment requests
ROUND_PAUSE_S = 0.1
SPAM_PAUSE_S = 0.05


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[ChaosSite]:
    site = start_site(tmp_path, HONEST_GATEWAYS)
    try:
        yield site
    finally:
        site.close()


def test_one_hostile_gateway_does_not_stop_the_fleet(chaos: ChaosSite) -> None:
    chaos.start_collector()
    chaos.start_gateways()
    honest_ids = [g.gateway_id for g in chaos.honest]
    wait_until(lambda: chaos.stored_readings(honest_ids) > 0, 60, "honest readings to flow")

    collector = chaos.collector
    assert collector is not None
    with attack(chaos, honest_ids, ROUND_PAUSE_S, SPAM_PAUSE_S) as running:
        # the collector process must be up the whole time, not merely at the end
        alive_throughout = True
        deadline = time.monotonic() + ATTACK_S
        while time.monotonic() < deadline and not running.errors:
            if collector.poll() is not None:
                alive_throughout = False
                break
            time.sleep(0.5)
    attacker, spammer, endpoint = running.attacker, running.spammer, running.endpoint
    assert alive_throughout, f"collector exited:\n{chaos.log('collector.log')[-3000:]}"
    assert attacker.rounds > 10 and spammer.sent > 10  # the attack ran
    assert set(attacker.takeovers) == {COLLECTOR_ID, honest_ids[0]}, attacker.takeovers

    # ---- the honest gateways stop (draining their spools); the collector catches up
    chaos.wait_holds_spooled()  # first the backlog of the attack, with the gateways running
    chaos.stop_gateways()
    spools = chaos.spools()
    published = {gw: n for gw, (n, _, _) in spools.items()}
    assert all(published.values()), published
    assert {gw: depth for gw, (_, depth, _) in spools.items()} == dict.fromkeys(honest_ids, 0)
    assert {gw: drop for gw, (_, _, drop) in spools.items()} == dict.fromkeys(honest_ids, 0)
    total = sum(published.values())
    wait_until(lambda: chaos.stored_readings(honest_ids) >= total, 120, "collector to catch up")
    assert collector.poll() is None, chaos.log("collector.log")[-3000:]

    # ---- every honest reading stored exactly once
    assert chaos.stored_readings(honest_ids) == total
    stored = influx_counts(chaos.influx.url, chaos.site.cfg.influx.database)
    assert {gw: stored.get(gw, 0) for gw in honest_ids} == published
    store = chaos.store()
    try:
        messages = dict(store.db.execute(
            "SELECT gateway, count(*) FROM received GROUP BY gateway"
        ).fetchall())  # fmt: skip
        counters = store.counters()
    finally:
        store.db.close()
    in_log = chaos.log_entries_by_gateway()
    assert in_log["(duplicate entries)"] == 0
    for gw in honest_ids:
        assert in_log[gw] == messages[gw], gw
    assert messages[attacker.gw] == in_log[attacker.gw] == attacker.accepted

    # ---- every rejection counted under the reason the attacker's message earned, no other
    quarantined = chaos.quarantine_by_gateway()
    assert quarantined.pop(attacker.gw) == attacker.quarantined
    for gw, reasons in quarantined.items():  # honest gateways: only their own redeliveries
        assert gw in honest_ids and set(reasons) == {"replay"}, (gw, reasons)
    honest_replays = sum(n for r in quarantined.values() for n in r.values())
    for reason, n in attacker.quarantined.items():
        extra = honest_replays if reason == "replay" else 0
        assert counters[f"quarantined:{reason}"] == n + extra, reason
    wait_until(
        lambda: chaos.status_ignored() == attacker.status_ignored, 30,
        f"status_ignored to be {dict(attacker.status_ignored)}",
    )  # fmt: skip

    # ---- the enrollment endpoint counted each refusal the spammer was answered with
    refused = endpoint.refused
    for status, reason in REFUSAL_BY_STATUS.items():
        assert refused[reason] == spammer.answers[status], (reason, spammer.answers, refused)
    assert sum(spammer.answers.values()) == spammer.sent
    assert set(spammer.answers) <= {202, *REFUSAL_BY_STATUS}, spammer.answers
    assert spammer.answers[429] > 0

    # ---- nobody lost a connection to the hostile gateway's takeover attempts
    collector_log = chaos.log("collector.log")
    assert "Traceback" not in collector_log
    assert "lost broker connection" not in collector_log, collector_log[-3000:]
    for gw in honest_ids:
        assert "lost broker connection" not in chaos.log(f"{gw}.log"), gw
    chaos.broker.stop()  # Mosquitto buffers its log file: stopped, it has written every line
    broker_log = chaos.broker.log_path.read_text(errors="replace")
    kicked = Counter(
        re.findall(r"Client (\S+) already connected, closing old connection", broker_log)
    )
    assert set(kicked) == {attacker.gw}, kicked  # only its own session, each time
    assert kicked[attacker.gw] == sum(attacker.takeovers.values())
