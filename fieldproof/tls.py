"""TLS credentials as each machine makes and keeps them: EC P-256 private key files (mode 0600,
made on the machine that uses them, never overwritten), certificate signing requests with only
a CN, and the two facts an operator reads off a certificate (CN, SHA-256 fingerprint).

Shared because a gateway makes its own key and CSR, and the collector's CA
(:mod:`collector.ca`) signs CSRs and keeps its own key the same way."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
)
from cryptography.x509.oid import NameOID

from fieldproof.errors import CredentialError
from fieldproof.keys import read_private_key, write_new_key


class CAError(CredentialError):
    """A TLS key, certificate or the CA cannot do what was asked; the message says what, where
    and what to do."""


# --------------------------------------------------------------------------------------------


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a key readable by its owner only; never overwrite an existing key."""
    write_new_key(path, key, CAError, f"{path} already exists; refusing to overwrite a private key")


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load an EC key, refusing one that group or others can read."""
    key = read_private_key(path, CAError, f"no private key at {path}")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{path} is not an EC private key")
    return key


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    """P-256: every TLS stack (Mosquitto's OpenSSL, ESP32 mbedTLS, Python) speaks it."""
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.CertificateSigningRequest:
    """A CSR whose subject is only the CN (the CA decides everything else)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: what an operator reads out to pin a CA."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None
