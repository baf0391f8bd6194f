"""Registry events that embed the gateway's own signed request (docs/enrollment.md): the
verifier checks the enrollment request is signed by the enrolled key and declares what the
event says, and that a rotation was authorised by the key it replaces.

Honest events are made by the collector's real enroller (collector/enrollment.py: operator
approval, CA, registry, evidence log); forged ones are what an operator writing its own log
entries could make: a request signed by another key, a request of another gateway, an event
that moves the gateway to another farm than it declared, a rotation the old key never signed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.ca import CertificateAuthority
from collector.enrollment import Enroller
from collector.export import export_bundle
from fieldproof.formats.enrollment import (
    REQUEST_TYPE,
    build_request,
    build_rotation,
    registry_entry,
)
from fieldproof.tls import make_csr, new_tls_key
from fieldproof.wire import encode_deterministic, gateway_id_for, public_key_bytes, sign1
from inspector.verify import VerificationResult, verify_bundle
from tests.support.bundles import Farm, Gateway

NOW = time.time()
T0 = NOW - 7200


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path)
    CertificateAuthority.create(f.config.data_dir / "ca")
    yield f
    f.close()


def _request(key: Ed25519PrivateKey, farm: str = "farm-a", field: str = "north") -> bytes:
    gw = gateway_id_for(public_key_bytes(key))
    return build_request(key, make_csr(new_tls_key(), gw), farm=farm, field=field,
                         location="47.1,8.2", installer="Ana", sensors=[{"name": "station"}],
                         now=T0 - 600)


def _enroll(farm: Farm) -> Gateway:
    """Enrolled by the operator through the real enroller: the event embeds the request."""
    key = Ed25519PrivateKey.generate()
    Enroller.from_config(farm.config, farm.registry).approve(_request(key), operator="olga")
    g = Gateway(gateway_id_for(public_key_bytes(key)), key, "farm-a", "north")
    farm.gateways.append(g)
    return g


def _log_enroll(site: Farm, key: Ed25519PrivateKey, request: bytes, **override: Any) -> Gateway:
    """An enroll event written straight into the log, as a dishonest operator could."""
    pk = public_key_bytes(key)
    gw = gateway_id_for(pk)
    fields: dict[str, Any] = {"pk": pk, "farm": "farm-a", "field": "north",
                              "location": "47.1,8.2", "installer": "Ana",
                              "sensors": [{"name": "station"}], "approved": "operator:olga",
                              "request": request}
    fields.update(override)
    with site.db:
        site.evidence.append([registry_entry("enroll", gw, T0 - 500, **fields)])
    g = Gateway(gw, key, str(fields["farm"]), "north")
    site.gateways.append(g)
    return g


def _verify(farm: Farm) -> VerificationResult:
    farm.checkpoint()
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 3600,
                         end=NOW + 60)
    return verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey)


def _problem(r: VerificationResult, code: str) -> str:
    return next(f.message for f in r.findings if f.code == code)


def test_enroller_events_verify(farm: Farm) -> None:
    g = _enroll(farm)
    farm.run(g, T0, 3)
    r = _verify(farm)
    assert r.codes("error") == set(), [f.message for f in r.findings]
    assert len(r.messages) == 3 and r.gateways[0].location == "47.1,8.2"


def test_request_signed_by_another_key(farm: Farm) -> None:
    """The request names the enrolled key but someone else signed it."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pk = public_key_bytes(key)
    gw = gateway_id_for(pk)
    body = {"t": REQUEST_TYPE, "gw": gw, "pk": pk, "farm": "farm-a", "field": "north",
            "location": "47.1,8.2", "installer": "Ana", "sensors": [{"name": "station"}],
            "time": T0 - 600, "nonce": b"\x01" * 16, "csr": b"\x30"}
    forged = sign1(encode_deterministic(body), other, gw.encode())
    g = _log_enroll(farm, key, forged)
    farm.run(g, T0, 2)
    r = _verify(farm)
    assert r.codes("error") == {"enrollment_request_invalid"}
    assert "does not verify with the enrolled key" in _problem(r, "enrollment_request_invalid")
    assert r.verdict == "fail"


def test_request_names_another_key(farm: Farm) -> None:
    """A genuine request, but of another device: the event enrolls a key nobody asked for."""
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    g = _log_enroll(farm, key, _request(other))
    farm.run(g, T0, 2)
    r = _verify(farm)
    assert r.codes("error") == {"enrollment_request_invalid"}
    assert gateway_id_for(public_key_bytes(other)) in _problem(r, "enrollment_request_invalid")


def test_event_contradicts_what_the_gateway_declared(farm: Farm) -> None:
    """The gateway asked to be enrolled on farm-a; the operator's event says farm-b."""
    key = Ed25519PrivateKey.generate()
    g = _log_enroll(farm, key, _request(key), farm="farm-b")
    farm.run(g, T0, 2)
    r = _verify(farm)
    assert r.codes("error") == {"enrollment_request_invalid"}
    message = _problem(r, "enrollment_request_invalid")
    assert "'farm-b'" in message and "'farm-a'" in message


def test_not_a_request_at_all(farm: Farm) -> None:
    key = Ed25519PrivateKey.generate()
    g = _log_enroll(farm, key, b"\xd2\x84garbage")
    farm.run(g, T0, 1)
    r = _verify(farm)
    assert r.codes("error") == {"enrollment_request_invalid"}


def test_rotation_must_be_signed_by_the_replaced_key(farm: Farm) -> None:
    """A real rotation (old key signs the new one in) is followed; one signed only by the new
    key is how an operator would slip its own key in: ignored, and its messages fail."""
    g = _enroll(farm)
    farm.run(g, T0, 3)
    new = Ed25519PrivateKey.generate()
    enroller = Enroller.from_config(farm.config, farm.registry)
    enroller.rotate(build_rotation(g.key, new, g.gateway, 4, T0 + 200))
    g.key = new
    farm.run(g, T0 + 240, 2)  # seq 4, 5 with the new key
    r = _verify(farm)
    assert r.codes("error") == set(), [f.message for f in r.findings]
    assert sorted(m.seq for m in r.messages) == [1, 2, 3, 4, 5]

    intruder = Ed25519PrivateKey.generate()
    forged = build_rotation(intruder, intruder, g.gateway, 6, T0 + 400)
    with farm.db:
        farm.evidence.append([registry_entry(
            "rotate", g.gateway, T0 + 400, pk=public_key_bytes(intruder),
            prev_pk=public_key_bytes(new), from_seq=6, request=forged)])
    g.key = intruder
    farm.run(g, T0 + 500, 2)  # seq 6, 7 signed by the intruder's key
    r = _verify(farm)
    assert r.codes("error") == {"registry_invalid", "bad_signature"}
    assert "not signed by the key it replaces" in _problem(r, "registry_invalid")
    assert sorted(m.seq for m in r.messages) == [1, 2, 3, 4, 5]
