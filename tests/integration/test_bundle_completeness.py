"""The issue's contract for withheld evidence (issue 13, finding 3), on the demo: a demo bundle
edited to drop a gateway, or a gateway's tail, does not pass ``fieldproof verify --offline``
(non-zero exit) while the untouched one does.

``fieldproof demo --chain none`` runs the whole path (Mosquitto, InfluxDB, a collector and three
gateway processes) and writes one bundle per farm to the report directory; the bundles are
edited with the project's own codec (decode, drop, encode: nothing re-signed) and verified by
the command line as an inspector runs it, with the log key the operator publishes pinned.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from anchor.logkey import load_or_create_log_key
from fieldproof.config import load_collector_config
from fieldproof.formats.bundle import Bundle, decode_bundle, encode_bundle
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import parse_sign1, payload_from_cbor

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _verify(path: Path, vkey: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldproof", "verify", "--offline", "--log-key", vkey, str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


def _gateway_of(raw: bytes) -> tuple[str, int]:
    p = payload_from_cbor(parse_sign1(raw).payload)
    return p.gateway, p.seq


def _without_gateway(b: Bundle, gw: str) -> Bundle:
    return dataclasses.replace(
        b,
        registry=tuple(e for e in b.registry
                       if (parse_registry_event(e.data) or {}).get("gw") != gw),
        messages=tuple(e for e in b.messages if _gateway_of(e.data)[0] != gw))


def _without_tail(b: Bundle, gw: str) -> Bundle:
    seqs = sorted(s for g, s in map(_gateway_of, (e.data for e in b.messages)) if g == gw)
    tail = set(seqs[len(seqs) * 2 // 3:])
    return dataclasses.replace(b, messages=tuple(
        e for e in b.messages if _gateway_of(e.data) not in {(gw, s) for s in tail}))


def test_edited_demo_bundles_do_not_pass(tmp_path: Path) -> None:
    work, reports = tmp_path / "w", tmp_path / "r"
    demo = subprocess.run(
        [sys.executable, "-m", "fieldproof", "demo", "--chain", "none", "--gateways", "3",
         "--duration", "8", "--interval", "0.5", "--workdir", str(work),
         "--report-dir", str(reports)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    config = load_collector_config(work / "collector" / "collector.toml")
    vkey = load_or_create_log_key(config.log_key_file, config.log_origin).verifier().vkey

    north = reports / "north-farm.fpb"  # two gateways (field-a, field-b)
    river = reports / "river-farm.fpb"  # one
    for path in (north, river):
        ok = _verify(path, vkey)
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
        assert ok.stdout.startswith("PASS"), ok.stdout[:500]
        assert "completeness: complete" in ok.stdout

    b = decode_bundle(north.read_bytes())
    gateways = sorted({_gateway_of(e.data)[0] for e in b.messages})
    assert len(gateways) == 2 and b.completeness is not None
    # a farm's bundle carries the registry events of its own gateways only: nothing of the
    # other farm's gateway (its id, its enrollment's farm, location or installer) is in it
    assert {(parse_registry_event(e.data) or {}).get("gw") for e in b.registry} == set(gateways)
    theirs = decode_bundle(river.read_bytes())
    (river_gw,) = {_gateway_of(e.data)[0] for e in theirs.messages}
    for e in theirs.registry:
        event = parse_registry_event(e.data) or {}
        assert event.get("gw") == river_gw
        for value in (river_gw, event.get("farm"), event.get("location"), event.get("installer")):
            if isinstance(value, str) and value:
                assert value.encode() not in north.read_bytes(), value
    assert all(len([e for e in b.messages if _gateway_of(e.data)[0] == gw]) >= 6
               for gw in gateways)
    edits = {
        "no-gateway.fpb": (_without_gateway(b, gateways[1]),
                           {"registry_withheld", "gateway_withheld"}),
        "no-tail.fpb": (_without_tail(b, gateways[0]), {"period_cut"}),
    }
    for name, (edited, codes) in edits.items():
        path = tmp_path / name
        path.write_bytes(encode_bundle(edited))
        bad = _verify(path, vkey)
        assert bad.returncode == 1, (name, bad.stdout[-3000:], bad.stderr[-3000:])
        assert bad.stdout.startswith("FAIL:"), bad.stdout[:500]
        for code in codes:
            assert f"ERROR   {code}" in bad.stdout, (name, code, bad.stdout[-3000:])
    # the untouched file is still what the demo wrote, and still passes
    assert decode_bundle(north.read_bytes()) == b
    assert _verify(north, vkey).returncode == 0
