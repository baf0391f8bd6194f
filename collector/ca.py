"""The collector's own certificate authority for MQTT over TLS.

Why our own CA: the broker must know *which gateway* is connecting, not merely that someone has
a publicly trusted certificate. Mosquitto takes the client certificate's CN as the MQTT username
(``use_identity_as_username``) and the ACL lets a username write only under its own topic, so a
certificate with CN = gateway id is what makes "a gateway writes only as itself" true.

Layout of the CA directory (keep it on the collector host, owned by the collector's user)::

    ca.key       EC P-256 private key, mode 0600, never leaves this directory
    ca.pem       the CA certificate: gateways and the broker trust this
    crl.pem      certificate revocation list the broker reads (``crlfile``)
    issued.json  every certificate issued: serial, CN, kind, validity, revocation time

Private keys of gateways and collectors are generated on their own machines; the CA signs
certificate signing requests (CSRs) only. The broker's key is made here because the CA and the
broker live on the same server (``issue_server``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fieldproof.tls import (
    CAError,
    common_name,
    fingerprint,
    load_private_key,
    new_tls_key,
    write_private_key,
)

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
CRL_FILE = "crl.pem"
INDEX_FILE = "issued.json"

#: a gateway's certificate CN is its id: "gw-" + 16 hex digits (fieldproof.wire.gateway_id_for)
GATEWAY_CN = re.compile(r"^gw-[0-9a-f]{16}$")
#: collectors' ids (CollectorConfig.collector_id) that cannot be mistaken for a gateway
COLLECTOR_CN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

CertKind = Literal["gateway", "collector", "server"]
Clock = Callable[[], float]

#: certificates start this much before "now" so a client clock slightly behind still accepts
BACKDATE_S = 3600


@dataclass(frozen=True)
class IssuedCert:
    """One line of issued.json."""

    serial: int
    cn: str
    kind: str
    not_before: float
    not_after: float
    fingerprint: str
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write-then-rename so a reader (the broker) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# The CA
# --------------------------------------------------------------------------------------------


class CertificateAuthority:
    """Issue, list and revoke certificates; keep the CRL current. One process at a time
    changes issued.json (an exclusive lock on ``.lock``)."""

    def __init__(
        self,
        directory: Path,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        clock: Clock = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.key = key
        self.cert = cert
        self.clock = clock

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def create(
        cls,
        directory: Path,
        name: str = "fieldproof MQTT CA",
        days: int = 3650,
        crl_days: int = 365,
        clock: Clock = time.time,
    ) -> CertificateAuthority:
        """Make a new CA (key, self-signed certificate, empty CRL). Refuses to replace one."""
        directory = Path(directory)
        if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
            raise CAError(
                f"{directory} already holds a CA; every gateway certificate depends on it. "
                "Use it, or choose another --ca-dir."
            )
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key = new_tls_key()
        now = clock()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldproof"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - BACKDATE_S))
            .not_valid_after(_utc(now + days * 86400))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private_key(directory / CA_KEY, key)
        _atomic_write(directory / CA_CERT, cert.public_bytes(Encoding.PEM))
        ca = cls(directory, key, cert, clock)
        with ca._locked():
            ca._save_index([])
            ca.write_crl(days=crl_days)
        return ca

    @classmethod
    def open(cls, directory: Path, clock: Clock = time.time) -> CertificateAuthority:
        directory = Path(directory)
        if not (directory / CA_CERT).exists():
            raise CAError(
                f"no CA in {directory} (no {CA_CERT}); create it on the collector host with "
                f"'fieldproof collector ca init --ca-dir {directory}'"
            )
        key = load_private_key(directory / CA_KEY)
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        if cert.public_key() != key.public_key():
            raise CAError(f"{directory / CA_KEY} does not belong to {directory / CA_CERT}")
        return cls(directory, key, cert, clock)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ index

    def issued(self) -> list[IssuedCert]:
        try:
            rows = json.loads((self.directory / INDEX_FILE).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise CAError(f"cannot read {self.directory / INDEX_FILE}: {exc}") from None
        return [IssuedCert(**r) for r in rows]

    def _save_index(self, rows: list[IssuedCert]) -> None:
        data = json.dumps([asdict(r) for r in rows], indent=1).encode()
        _atomic_write(self.directory / INDEX_FILE, data, 0o600)

    def _record(self, cert: x509.Certificate, cn: str, kind: CertKind) -> None:
        with self._locked():
            rows = self.issued()
            rows.append(
                IssuedCert(
                    serial=cert.serial_number,
                    cn=cn,
                    kind=kind,
                    not_before=cert.not_valid_before_utc.timestamp(),
                    not_after=cert.not_valid_after_utc.timestamp(),
                    fingerprint=fingerprint(cert),
                )
            )
            self._save_index(rows)

    # ------------------------------------------------------------------ issuing

    def _builder(
        self, subject_cn: str, public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
        days: int,
    ) -> x509.CertificateBuilder:  # fmt: skip
        now = self.clock()
        not_after = min(now + days * 86400, self.cert.not_valid_after_utc.timestamp())
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now - BACKDATE_S))
            .not_valid_after(_utc(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )

    @staticmethod
    def _key_usage() -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )

    def issue_client(
        self, csr: x509.CertificateSigningRequest, cn: str, kind: CertKind, days: int = 730
    ) -> x509.Certificate:
        """Sign a gateway's or collector's CSR. The CN must be exactly ``cn`` (the caller has
        checked who this is: a verified enrollment or the collector's own config)."""
        if kind == "gateway" and not GATEWAY_CN.match(cn):
            raise CAError(f"{cn!r} is not a gateway id (gw- and 16 hex digits)")
        if kind == "collector" and (not COLLECTOR_CN.match(cn) or GATEWAY_CN.match(cn)):
            raise CAError(
                f"{cn!r} cannot be a collector id: use letters, digits, '.', '_', '-' "
                "and nothing that looks like a gateway id"
            )
        if kind == "server":
            raise CAError("server certificates are made with issue_server")
        if not csr.is_signature_valid:
            raise CAError("the certificate signing request's signature does not verify")
        got = common_name(csr.subject)
        if got != cn:
            raise CAError(f"the CSR is for CN={got!r}, expected CN={cn!r}")
        public_key = csr.public_key()
        if not (
            (
                isinstance(public_key, ec.EllipticCurvePublicKey)
                and isinstance(public_key.curve, ec.SECP256R1 | ec.SECP384R1)
            )
            or isinstance(public_key, ed25519.Ed25519PublicKey)
        ):
            raise CAError("the CSR's key must be EC P-256/P-384 or Ed25519")
        cert = (
            self._builder(cn, public_key, days)
            .add_extension(self._key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self._record(cert, cn, kind)
        return cert

    def issue_server(self, hosts: list[str], key_path: Path, days: int = 825) -> x509.Certificate:
        """Make the broker's key (at ``key_path``, 0600) and certificate for ``hosts`` (DNS
        names or IP addresses the gateways will connect to)."""
        if not hosts:
            raise CAError("give at least one --host: the name or address gateways connect to")
        names: list[x509.GeneralName] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        key = new_tls_key()
        write_private_key(key_path, key)
        cert = (
            self._builder(hosts[0], key.public_key(), days)
            .add_extension(self._key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self._record(cert, hosts[0], "server")
        return cert

    # ------------------------------------------------------------------ revocation

    def revoke(self, cn: str, crl_copy: Path | None = None) -> list[IssuedCert]:
        """Revoke every unrevoked certificate issued to ``cn`` and rewrite the CRL.
        Returns what was revoked (empty when nothing was)."""
        now = self.clock()
        with self._locked():
            rows = self.issued()
            revoked: list[IssuedCert] = []
            out: list[IssuedCert] = []
            for r in rows:
                if r.cn == cn and r.revoked_at is None:
                    r = IssuedCert(**{**asdict(r), "revoked_at": now})
                    revoked.append(r)
                out.append(r)
            if revoked:
                self._save_index(out)
                self.write_crl(copy_to=crl_copy)
        return revoked

    def write_crl(self, days: int = 365, copy_to: Path | None = None) -> Path:
        """(Re)write crl.pem from issued.json, valid ``days``. The broker refuses EVERY client
        once its CRL is past nextUpdate, so this runs on each revocation and from a timer."""
        now = self.clock()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(_utc(now - BACKDATE_S))
            .next_update(_utc(now + days * 86400))
            .add_extension(x509.CRLNumber(int(now * 1000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for r in self.issued():
            if r.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(r.serial)
                    .revocation_date(_utc(r.revoked_at))
                    .build()
                )
        pem = builder.sign(self.key, hashes.SHA256()).public_bytes(Encoding.PEM)
        _atomic_write(self.crl_path, pem)
        if copy_to is not None and Path(copy_to) != self.crl_path:
            _atomic_write(Path(copy_to), pem)
        return self.crl_path

    def is_revoked(self, serial: int) -> bool:
        return any(r.serial == serial and r.revoked for r in self.issued())


def load_crl(path: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(Path(path).read_bytes())
