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
from collections.abc import Callable
from pathlib import Path

import pytest

from anchor.logkey import load_or_create_log_key
from fieldproof.config import load_collector_config
from fieldproof.formats.bundle import (
    Bundle,
    GatewayClaim,
    decode_bundle,
    encode_bundle,
    parse_claim_note,
    sign_completeness,
)
from fieldproof.formats.note import Ed25519Signer, open_note
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import parse_sign1, payload_from_cbor

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _verify(path: Path, vkey: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldproof", "verify", "--offline", "--log-key", vkey, *more,
         str(path)],
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


def _without_head(b: Bundle, gw: str) -> Bundle:
    seqs = sorted(s for g, s in map(_gateway_of, (e.data for e in b.messages)) if g == gw)
    head = set(seqs[:len(seqs) // 3])
    return dataclasses.replace(b, messages=tuple(
        e for e in b.messages if _gateway_of(e.data) not in {(gw, s) for s in head}))


def _without_registry_event(b: Bundle, gw: str) -> Bundle:
    """The gateway's first registry event (its enrollment) left out, its messages kept."""
    (first, *_) = [e for e in b.registry if (parse_registry_event(e.data) or {}).get("gw") == gw]
    return dataclasses.replace(b, registry=tuple(e for e in b.registry if e != first))


def _resigned(b: Bundle, signer: Ed25519Signer, edited: Bundle,
              change: Callable[[list[GatewayClaim]], list[GatewayClaim]]) -> Bundle:
    """``edited`` with a new completeness claim the operator signs with the real log key to
    match the cut: the attack the log's seal (docs/bundle.md §4b) is there to catch."""
    c = b.completeness
    assert c is not None
    root = parse_claim_note(open_note(c.note, [signer.verifier()]).text).root
    records = change(list(c.gateways))
    held = {g.gateway for g in records}
    registry = sum(1 for e in edited.registry
                   if e.index < c.size and (parse_registry_event(e.data) or {}).get("gw") in held)
    lie = sign_completeness(signer, b.origin, root, b.scope, c.size, registry, records)
    return dataclasses.replace(edited, completeness=lie)


def test_edited_demo_bundles_do_not_pass(tmp_path: Path) -> None:
    work, reports = tmp_path / "w", tmp_path / "r"
    demo = subprocess.run(
        [sys.executable, "-m", "fieldproof", "demo", "--chain", "none", "--gateways", "3",
         "--duration", "8", "--interval", "0.5", "--workdir", str(work),
         "--report-dir", str(reports)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    config = load_collector_config(work / "collector" / "collector.toml")
    signer = load_or_create_log_key(config.log_key_file, config.log_origin)
    vkey = signer.verifier().vkey

    north = reports / "north-farm.fpb"  # two gateways (field-a, field-b)
    river = reports / "river-farm.fpb"  # one
    for path in (north, river):
        ok = _verify(path, vkey)
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
        assert ok.stdout.startswith("PASS"), ok.stdout[:500]
        assert "completeness: complete" in ok.stdout
        # the log's seal, anchored with the claim's checkpoint, agrees: proven, not just claimed
        assert "complete and sealed" in ok.stdout, ok.stdout[:800]
        assert decode_bundle(path.read_bytes()).seal is not None
        strict = _verify(path, vkey, "--require-complete")
        assert strict.returncode == 0, strict.stdout[-3000:]

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
    dropped = _without_gateway(b, gateways[1])
    tail_cut = _without_tail(b, gateways[0])
    last_kept = max(s for g, s in map(_gateway_of, (e.data for e in tail_cut.messages))
                    if g == gateways[0])

    def hide_tail(records: list[GatewayClaim]) -> list[GatewayClaim]:
        return [dataclasses.replace(g, latest_seq=last_kept, to_seq=last_kept,
                                    count=last_kept - (g.from_seq or 0) + 1)
                if g.gateway == gateways[0] else g for g in records]

    edits = {
        "no-gateway.fpb": (dropped, {"registry_withheld", "gateway_withheld"}),
        "no-tail.fpb": (tail_cut, {"period_cut"}),
        "no-head.fpb": (_without_head(b, gateways[0]), {"period_cut"}),
        "no-enrollment.fpb": (_without_registry_event(b, gateways[1]), {"registry_withheld"}),
        # the operator, holding the log key, signs a claim that matches the cut: only the
        # log's seal, written and anchored before the export, shows the lie
        "forged-claim-no-gateway.fpb": (
            _resigned(b, signer, dropped,
                      lambda rs: [g for g in rs if g.gateway != gateways[1]]),
            {"seal_claim_mismatch", "gateway_withheld"}),
        "forged-claim-no-tail.fpb": (_resigned(b, signer, tail_cut, hide_tail),
                                     {"seal_claim_mismatch", "period_cut"}),
    }
    for name, (edited, codes) in edits.items():
        path = tmp_path / name
        path.write_bytes(encode_bundle(edited))
        bad = _verify(path, vkey)
        assert bad.returncode == 1, (name, bad.stdout[-3000:], bad.stderr[-3000:])
        assert bad.stdout.startswith("FAIL:"), bad.stdout[:500]
        for code in codes:
            assert f"ERROR   {code}" in bad.stdout, (name, code, bad.stdout[-3000:])
    # without its seal (a downgrade) the bundle is only claimed complete: a warning, and a
    # failure for an inspector who requires proof
    unsealed = tmp_path / "unsealed.fpb"
    unsealed.write_bytes(encode_bundle(dataclasses.replace(b, seal=None)))
    warned = _verify(unsealed, vkey)
    assert warned.returncode == 0 and "completeness not provable: no seal" in warned.stdout
    assert _verify(unsealed, vkey, "--require-complete").returncode == 1
    # the untouched file is still what the demo wrote, and still passes
    assert decode_bundle(north.read_bytes()) == b
    assert _verify(north, vkey).returncode == 0
