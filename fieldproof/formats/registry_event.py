"""Registry events: a gateway's enrollment (its public key, farm, field, location) or
revocation as an entry of the evidence log, so key history is anchored like readings.

An event is a deterministic-CBOR map whose ``"t"`` is ``"fieldproof/registry/v1"``
(docs/evidence-log.md); a log entry whose first byte is 0xd2 is a signed message instead."""

from __future__ import annotations

import time
from typing import Any

from fieldproof.wire import decode_deterministic, encode_deterministic

REGISTRY_EVENT_TYPE = "fieldproof/registry/v1"
REGISTRY_EVENTS = ("enroll", "revoke")


def registry_event(
    event: str,
    gateway: str,
    *,
    public_key: bytes = b"",
    farm: str = "",
    field: str = "",
    location: str = "",
    at: float | None = None,
) -> bytes:
    """A registry change as a log entry (deterministic CBOR)."""
    if event not in REGISTRY_EVENTS:
        raise ValueError(f"registry event must be one of {REGISTRY_EVENTS}")
    body: dict[str, Any] = {
        "t": REGISTRY_EVENT_TYPE,
        "event": event,
        "gw": gateway,
        "time": float(time.time() if at is None else at),
    }
    if event == "enroll":
        body.update(pk=public_key, farm=farm, field=field, location=location)
    return encode_deterministic(body)


def parse_registry_event(entry: bytes) -> dict[str, Any] | None:
    """The event in a log entry, or None when the entry is not a registry event."""
    if not entry or entry[0] == 0xD2:
        return None
    try:
        obj = decode_deterministic(entry, "registry event")
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("t") != REGISTRY_EVENT_TYPE:
        return None
    return obj
