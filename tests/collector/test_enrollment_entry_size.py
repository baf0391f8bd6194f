"""An enrollment's log entry carries the gateway's signed request (at most 32 KiB) and, again,
the request's farm, field, location, installer and sensors, so it can be twice a request's
size: the largest a gateway can make is measured here through the real enroller, a real CA and
a real log, with the smallest key and CSR a gateway may use (Ed25519), and must fit a
tlog-tiles entry bundle (65,535 bytes). The operator's name the entry also records is bounded
(64 printable characters) so it cannot push the entry past the bound; and an entry that would
not fit is refused before anything is registered or a token is spent, by the enroller and by
``collector devices approve`` with a clear error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

import anchor.logstore
import collector.enrollment
from anchor.evidence import EvidenceLog
from anchor.tiles import write_tiles
from collector.ca import CertificateAuthority
from collector.enrollment import MAX_OPERATOR_CHARS, Enroller
from collector.registry import Registry
from fieldproof.cli import cli
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.formats.enrollment import MAX_REQUEST_BYTES, EnrollmentError, build_request
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.formats.tiles import MAX_ENTRY_BYTES
from fieldproof.wire import gateway_id_for, public_key_bytes
from inspector.mirror import DirectorySource, mirror_once

ORIGIN = "fieldproof.test/log/enroll-size"
FARM, FIELD = "f" * 64, "g" * 64


def largest_request(token: str | None) -> tuple[str, bytes]:
    """(gateway, request) of exactly MAX_REQUEST_BYTES, nearly all of it in the fields the
    entry repeats: every text at its limit and sensor settings filling the rest."""
    key = Ed25519PrivateKey.generate()
    gw = gateway_id_for(public_key_bytes(key))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gw)]))
        .sign(Ed25519PrivateKey.generate(), None)
    )

    def build(full: int, pad: int) -> bytes:
        sensors: list[dict[str, Any]] = [
            {"name": f"s{i}", **{f"k{j}": "x" * 200 for j in range(63)}} for i in range(full)
        ]
        sensors.append(
            {"name": "p", **{f"k{j}": "y" * min(200, max(0, pad - 200 * j)) for j in range(63)}}
        )
        return build_request(key, csr, farm=FARM, field=FIELD, location="l" * 200,
                             installer="i" * 100, sensors=sensors, now=time.time(),
                             token=token)  # fmt: skip

    best = b""
    for full in range(3):
        lo, hi = 0, 63 * 200  # the longest padding that still fits the request bound
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if len(build(full, mid)) <= MAX_REQUEST_BYTES else (lo, mid - 1)
        got = build(full, lo)
        if len(best) < len(got) <= MAX_REQUEST_BYTES:
            best = got
    assert len(best) == MAX_REQUEST_BYTES
    return gw, best


def _site(tmp_path: Path) -> tuple[Enroller, EvidenceLog]:
    cfg = CollectorConfig(data_dir=tmp_path)
    CertificateAuthority.create(cfg.data_dir / "ca")
    db = open_db(cfg.db_path)
    evidence = EvidenceLog.open(db, ORIGIN, tmp_path / "log.key")
    return Enroller.from_config(cfg, Registry(db, evidence)), evidence


def _enroll_entry(evidence: EvidenceLog, gw: str) -> bytes:
    for entry in evidence.log.entries(0, evidence.log.size()):
        event = parse_registry_event(entry)
        if event is not None and event.get("gw") == gw:
            return entry
    raise AssertionError(f"no registry event of {gw} in the log")


def test_the_largest_enrollment_entries_fit_a_tile_and_are_published(tmp_path: Path) -> None:
    enroller, evidence = _site(tmp_path)
    token, _ = enroller.tokens.create(FARM, FIELD, 3600)
    by_token, raw = largest_request(token)
    enroller.approve(raw)  # the HTTP endpoint's path: approved by the token
    by_operator, raw = largest_request(None)
    enroller.approve(raw, operator="o" * MAX_OPERATOR_CHARS)  # the longest name there may be
    sizes = {gw: len(_enroll_entry(evidence, gw)) for gw in (by_token, by_operator)}
    assert all(2 * MAX_REQUEST_BYTES - 1000 < n <= MAX_ENTRY_BYTES for n in sizes.values()), sizes

    cp = evidence.checkpoint()
    assert cp is not None
    write_tiles(evidence.log, cp.checkpoint.size, cp.note, tmp_path / "tiles")
    got = mirror_once(DirectorySource(tmp_path / "tiles"), tmp_path / "mirror",
                      evidence.verifier(), entries=True)  # fmt: skip
    assert got.size == cp.checkpoint.size
    evidence.db.close()


@pytest.mark.parametrize(
    "name", ["o" * (MAX_OPERATOR_CHARS + 1), "o" * 1000, "root\x1b[2J", ""], ids=repr
)
def test_an_operator_name_out_of_bounds_registers_nothing(tmp_path: Path, name: str) -> None:
    enroller, evidence = _site(tmp_path)
    gw, raw = largest_request(None)
    with pytest.raises(EnrollmentError, match="must be 1 to 64 printable characters"):
        enroller.approve(raw, operator=name)
    assert enroller.registry.get(gw) is None and evidence.log.size() == 0
    evidence.db.close()


def test_an_entry_too_long_to_log_costs_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No valid request makes an entry past the bound (the first test measures the largest),
    so the enroller's bound is lowered below that entry here, to see that the check comes
    before the token is claimed: the gateway can enroll with the same token once it fits."""
    enroller, evidence = _site(tmp_path)
    token, info = enroller.tokens.create(FARM, FIELD, 3600)
    gw, raw = largest_request(token)
    with monkeypatch.context() as m:
        m.setattr(collector.enrollment, "MAX_ENTRY_SIZE", 2 * MAX_REQUEST_BYTES - 2_000)
        with pytest.raises(EnrollmentError) as exc:
            enroller.approve(raw)
    text = str(exc.value)
    assert f"the log entry of {gw}'s enrollment would be" in text
    assert f"{MAX_REQUEST_BYTES}-byte signed request" in text
    assert "Nothing was registered and no token was used" in text
    assert [t.used_by for t in enroller.tokens.all() if t.id == info.id] == [None]
    assert enroller.registry.get(gw) is None and evidence.log.size() == 0
    assert not enroller.approve(raw).renewed  # the same token, now that the entry fits
    assert [t.used_by for t in enroller.tokens.all() if t.id == info.id] == [gw]
    evidence.db.close()


def test_approve_command_says_what_is_wrong_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``collector devices approve``: a name out of bounds is refused before anything is
    asked; an entry the log refuses (its own bound lowered here, as in the test above) is an
    error naming the gateway and the sizes, exit code 1, and nothing is registered."""
    cfg = CollectorConfig(data_dir=tmp_path)
    CertificateAuthority.create(cfg.data_dir / "ca")
    config = tmp_path / "collector.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n')
    gw, raw = largest_request(None)
    request = tmp_path / "request.cose"
    request.write_bytes(raw)
    approve = ["collector", "devices", "approve", "--config", str(config), "--yes"]
    runner = CliRunner()

    long_name = runner.invoke(cli, [*approve, "--operator", "o" * 65, str(request)])
    assert long_name.exit_code == 1, long_name.output
    assert isinstance(long_name.exception, SystemExit)  # no traceback
    assert "must be 1 to 64 printable characters" in long_name.output
    assert "farm / field" not in long_name.output  # refused before the request is shown

    with monkeypatch.context() as m:
        m.setattr(anchor.logstore, "MAX_ENTRY_SIZE", 2 * MAX_REQUEST_BYTES - 2_000)
        too_long = runner.invoke(cli, [*approve, "--operator", "root", str(request)])
    assert too_long.exit_code == 1, too_long.output
    assert isinstance(too_long.exception, SystemExit)
    assert f"Error: {gw} cannot be enrolled: log entry #0 of this append is" in too_long.output
    assert "nothing was registered" in too_long.output

    db = open_db(cfg.db_path)
    evidence = EvidenceLog.open(db, cfg.log_origin, cfg.log_key_file)
    assert Registry(db, evidence).get(gw) is None and evidence.log.size() == 0
    db.close()
    ok = runner.invoke(cli, [*approve, "--operator", "root", str(request)])
    assert ok.exit_code == 0, ok.output
    assert f"enrolled {gw}" in ok.output
