"""Checks of the gateway-signed requests that registry events embed (docs/enrollment.md).

An ``enroll`` event written by the collector's enroller carries the gateway's own signed
enrollment request, a ``rotate`` event the rotation request (signed by the old key around one
signed by the new key). The event is the operator's statement; the request is the device's.
Checking one against the other shows the operator neither made up a request nor changed what
the gateway declared (its key, farm, field, location, installer, sensors), and that a key
rotation was authorised by the key it replaces. Events without a request (a gateway added by
hand with ``fieldproof collector devices add``) carry only the operator's word; nothing here
can check them.

The formats are those of docs/enrollment.md, read with the wire module's strict primitives; the
verifier does not import the collector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldproof.wire import (
    ALG_EDDSA,
    HEADER_ALG,
    HEADER_KID,
    WireError,
    decode_deterministic,
    parse_sign1,
    verify_sign1,
)

__all__ = ["ENROLL_TYPE", "ROTATE_TYPE", "enrollment_problem", "rotation_problem"]

ENROLL_TYPE = "fieldproof/enroll/v1"
ROTATE_TYPE = "fieldproof/rotate/v1"
#: event fields the enroller copies from the request unchanged
_DECLARED = ("pk", "farm", "field", "location", "installer", "sensors")


def _signed_map(raw: Any, what: str) -> tuple[dict[str, Any], str]:
    """(payload map, kid) of a tagged, deterministically encoded EdDSA COSE_Sign1 with exactly
    alg and kid protected; raises ValueError saying what is wrong."""
    if not isinstance(raw, bytes):
        raise ValueError(f"the {what} is not a byte string")
    try:
        parsed = parse_sign1(raw, require_tag=True)
        decode_deterministic(raw, what)
        body = decode_deterministic(parsed.payload, f"{what} payload")
    except WireError as exc:
        raise ValueError(f"the {what} is not a signed fieldproof document: {exc}") from None
    if set(parsed.protected) != {HEADER_ALG, HEADER_KID} or parsed.alg != ALG_EDDSA \
            or parsed.unprotected:
        raise ValueError(f"the {what} does not have the headers of a fieldproof document "
                         "(protected alg EdDSA and kid, nothing unprotected)")
    if not isinstance(body, dict):
        raise ValueError(f"the {what} payload is not a map")
    kid = parsed.kid.decode("ascii", "replace") if parsed.kid else ""
    return body, kid


def enrollment_problem(event: Mapping[str, Any], gateway: str, public_key: bytes) -> str | None:
    """None if the enroll event carries no request, or a request the gateway signed with the
    enrolled key that declares what the event says; else what is wrong."""
    raw = event.get("request")
    if raw is None:
        return None
    try:
        body, kid = _signed_map(raw, "enrollment request")
    except ValueError as exc:
        return str(exc)
    if body.get("t") != ENROLL_TYPE:
        return f"the embedded document is not an enrollment request (t = {body.get('t')!r})"
    if body.get("gw") != gateway or kid != gateway:
        return (f"the enrollment request is from {body.get('gw')!r} (kid {kid!r}), not from "
                f"{gateway}")
    pk = body.get("pk")
    if pk != public_key:
        shown = pk.hex() if isinstance(pk, bytes) else repr(pk)
        return (f"the enrollment request names key {shown}, but the event enrolls key "
                f"{public_key.hex()}")
    try:
        verify_sign1(raw, public_key)
    except WireError as exc:
        return (f"the enrollment request's signature does not verify with the enrolled key "
                f"({exc}): the gateway did not sign it")
    for name in _DECLARED:
        if name in event and event[name] != body.get(name):
            return (f"the event says {name} {event[name]!r}, but the gateway's signed request "
                    f"says {body.get(name)!r}")
    return None


def rotation_problem(event: Mapping[str, Any], gateway: str, new_key: bytes, prev_key: bytes,
                     from_seq: int) -> str | None:
    """None if the rotate event carries no request, or one signed by the replaced key around
    one signed by the new key, both naming this rotation; else what is wrong."""
    raw = event.get("request")
    if raw is None:
        return None
    if not isinstance(raw, bytes):
        return "the rotation request is not a byte string"
    try:
        outer = parse_sign1(raw, require_tag=True)
        verify_sign1(raw, prev_key)
    except WireError as exc:
        return (f"the rotation request is not signed by the key it replaces ({exc}): the "
                "gateway did not authorise this rotation")
    if outer.kid != gateway.encode():
        return f"the rotation request's kid is not {gateway}"
    try:
        body, kid = _signed_map(outer.payload, "rotation request (inner)")
    except ValueError as exc:
        return str(exc)
    if body.get("t") != ROTATE_TYPE or kid != gateway or body.get("gw") != gateway:
        return "the embedded document is not a rotation request of this gateway"
    if body.get("pk") != prev_key or body.get("new_pk") != new_key \
            or body.get("from_seq") != from_seq:
        return ("the rotation request names other keys or another from_seq than the event "
                "(prev_pk, pk, from_seq)")
    try:
        verify_sign1(outer.payload, new_key)
    except WireError as exc:
        return f"the new key's signature on the rotation request does not verify ({exc})"
    return None
