"""Step 4, first half: the registry events (enroll, rotate, revoke) as a key history per
gateway, which the message signatures are then checked against (:mod:`inspector.batch`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from fieldproof.formats.bundle import Bundle, Entry, in_scope
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import gateway_id_for
from inspector.batch import KeyEvent
from inspector.checkpoint_check import Placement
from inspector.enrollment_checks import enrollment_problem, rotation_problem
from inspector.findings import FindingCode
from inspector.results import GatewaySummary

__all__ = ["KEY_EVENTS", "KeyHistory", "key_event_of", "key_history"]

#: registry events a verifier understands: enroll and revoke (anchor.evidence), and rotate
#: (collector.enrollment: the gateway keeps its id, ``pk`` signs from seq ``from_seq`` on)
KEY_EVENTS = ("enroll", "revoke", "rotate")


def key_event_of(entry: Entry) -> KeyEvent | str:
    """A registry event's content, or why it is not a usable one."""
    obj = parse_registry_event(entry.data)
    if obj is None:
        return "not a registry event (fieldproof/registry/v1, deterministic CBOR)"
    gw, event, when = obj.get("gw"), obj.get("event"), obj.get("time")
    if event not in KEY_EVENTS or not isinstance(gw, str) or not gw:
        return "registry event lacks a known event type or gateway id"
    t = float(when) if isinstance(when, int | float) and math.isfinite(when) else None
    if event == "revoke":
        return KeyEvent(entry.index, "revoke", time=t)
    pk = obj.get("pk")
    if not isinstance(pk, bytes) or len(pk) != 32:
        return f"{event} event of {gw} carries no 32-byte Ed25519 public key"
    if event == "rotate":
        prev, from_seq = obj.get("prev_pk"), obj.get("from_seq")
        if not isinstance(prev, bytes) or len(prev) != 32:
            return f"rotation of {gw} does not name the key it replaces (prev_pk)"
        if type(from_seq) is not int or from_seq < 1:
            return f"rotation of {gw} has no positive from_seq"
        return KeyEvent(entry.index, "rotate", pk, time=t, from_seq=from_seq, prev_key=prev)
    farm, fld, loc = obj.get("farm"), obj.get("field"), obj.get("location", "")
    if gateway_id_for(pk) != gw:
        return (f"enrollment of {gw} carries a public key whose id is {gateway_id_for(pk)}: "
                "the key does not belong to this gateway")
    if not isinstance(farm, str) or not isinstance(fld, str) or not isinstance(loc, str):
        return f"enrollment of {gw} has non-text farm, field or location"
    return KeyEvent(entry.index, "enroll", pk, farm, fld, loc, t)


@dataclass
class KeyHistory:
    """The proven key history of the bundle's gateways, and which of them its scope holds."""

    version: int
    #: gateways with an enrollment in the bundle's scope
    enrolled_here: set[str]
    #: per gateway, its usable enroll, rotate and revoke events in log order
    timeline: dict[str, list[KeyEvent]]

    def elsewhere(self, gw: str | None) -> bool:
        """Whether ``gw`` belongs to another scope: its events count for nothing here."""
        return self.version >= 2 and gw is not None and gw not in self.enrolled_here

    def summary(self, gw: str) -> GatewaySummary:
        """A new summary of ``gw`` filled from its first enrollment and revocation."""
        g = GatewaySummary(gw)
        events = self.timeline.get(gw, [])
        for ev in events:
            if ev.event == "enroll" and g.enrolled_index is None:
                g.enrolled_index, g.enrolled_time = ev.index, ev.time
                g.farm, g.field, g.location = ev.farm, ev.field, ev.location
                g.public_key = ev.public_key.hex()
            elif ev.event == "revoke" and g.revoked_index is None:
                g.revoked_index = ev.index
        g.keys = tuple(dict.fromkeys(ev.public_key.hex() for ev in events
                                     if ev.event in ("enroll", "rotate")))
        return g


def key_history(bundle: Bundle, where: Placement, later: Callable[..., None]) -> KeyHistory:
    """Step 4, registry: each registry event parsed, its embedded request checked
    (:mod:`inspector.enrollment_checks`) and its inclusion proven; rotations must follow from
    the key at that point. Findings go to ``later`` (they are reported after the anchors').

    The scope's gateways: a bundle carries only their registry events (a version 2 bundle each
    one's whole key history, §4a), and a gateway is in the scope when any of its enrollments
    is. An event of another scope's gateway has no business in a version 2 bundle and counts
    for nothing; what is wrong with it (a bad request, a broken rotation) is that scope's
    business, not a finding here; that it is in the log is proven all the same."""
    enrolled_here: set[str] = set()
    for entry in bundle.registry:
        obj = parse_registry_event(entry.data)
        gw = obj.get("gw") if obj is not None else None
        if isinstance(gw, str) and obj is not None and in_scope(bundle.scope, gw, obj):
            enrolled_here.add(gw)
    history = KeyHistory(bundle.version, enrolled_here, defaultdict(list))
    elsewhere, timeline = history.elsewhere, history.timeline

    for entry in bundle.registry:
        ev = key_event_of(entry)
        obj = parse_registry_event(entry.data)
        gw = obj.get("gw") if obj is not None and isinstance(obj.get("gw"), str) else None
        if isinstance(ev, str):
            if not elsewhere(gw):
                later(FindingCode.REGISTRY_INVALID,
                      f"registry entry at log index {entry.index}: {ev}", gw)
            continue
        assert gw is not None and obj is not None
        if ev.event == "enroll":
            problem = enrollment_problem(obj, gw, ev.public_key)
            if problem is not None and not elsewhere(gw):
                later(FindingCode.ENROLLMENT_REQUEST_INVALID,
                      f"enrollment of {gw} at log index {entry.index}: {problem}. The "
                      "operator's record of what the gateway declared cannot be trusted", gw)
        elif ev.event == "rotate":
            problem = rotation_problem(obj, gw, ev.public_key, ev.prev_key, ev.from_seq)
            if problem is not None:
                if not elsewhere(gw):
                    later(FindingCode.REGISTRY_INVALID,
                          f"rotation of {gw} at log index {entry.index}: {problem}; ignored", gw)
                continue
        included = where.prove(entry, f"registry event ({ev.event} {gw})", gw, later)
        if where.place(entry.index) is None:
            # only messages logged after it (so themselves unproven) can depend on it
            later(FindingCode.OUTSIDE_ANCHORED_RANGE,
                  f"registry event ({ev.event} {gw}) at log index {entry.index} is in no "
                  "checkpoint of the bundle yet: it is not proven", gw)
            included = True
        if included:
            timeline[gw].append(ev)

    for gw, events in timeline.items():
        current: bytes | None = None
        last_from = 0
        for ev in events:
            if ev.event == "enroll":
                current, last_from = ev.public_key, 0
            elif ev.event == "rotate":
                if current is None or ev.prev_key != current or ev.from_seq <= last_from:
                    if elsewhere(gw):
                        continue
                    later(FindingCode.REGISTRY_INVALID,
                          f"rotation of {gw} at log index {ev.index} does not follow from its "
                          "key at that point (wrong previous key or from_seq): ignored", gw)
                else:
                    current, last_from = ev.public_key, ev.from_seq
    return history
