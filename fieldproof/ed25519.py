"""Ed25519 signature verification through libsodium (PyNaCl).

Every collector and verifier CPU-second is mostly Ed25519 verification, and libsodium's
verify costs ~41 µs here against ~66 µs for OpenSSL's through ``cryptography`` (same
machine, same messages; ``benchmarks/run.py`` measures both every run). libsodium is also
the stricter of the two: it refuses small-order and non-canonical public keys and R values,
which an honest gateway never produces. Signing stays with ``cryptography`` (keys are made and
kept there; signing is not on any hot path)."""

from __future__ import annotations

from collections.abc import Callable

from fieldproof.errors import FormatError


class _NeverRaised(Exception):
    pass


def _missing(signed: bytes, public_key: bytes) -> bytes:
    raise ModuleNotFoundError(
        "verifying Ed25519 signatures needs PyNaCl (libsodium): "
        "pip install 'fieldproof[inspector]' (or [collector])",
        name="nacl",
    )


def _libsodium() -> tuple[Callable[[bytes, bytes], bytes], type[Exception], type[Exception]]:
    """libsodium's verify and its two errors; without PyNaCl (a gateway's install: it signs
    and never verifies) a stand-in that says which extra to install when it is called."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError, CryptoError
    except ImportError:
        return _missing, _NeverRaised, _NeverRaised
    return crypto_sign_open, BadSignatureError, CryptoError


_open, _BadSignature, _CryptoError = _libsodium()

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class InvalidEd25519Signature(FormatError):
    """The signature does not verify under the key (or the key/signature is unusable)."""


def verify(public_key: bytes, signature: bytes, data: bytes) -> None:
    """Raise :class:`InvalidEd25519Signature` unless ``signature`` is ``public_key``'s over
    ``data`` (RFC 8032 Ed25519, pure, no context)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidEd25519Signature("an Ed25519 public key is 32 bytes")
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidEd25519Signature("an Ed25519 signature is 64 bytes")
    try:
        _open(bytes(signature) + bytes(data), bytes(public_key))
    except _BadSignature:
        raise InvalidEd25519Signature("signature does not verify with this key") from None
    except _CryptoError as exc:  # libsodium refused the key itself
        raise InvalidEd25519Signature(f"public key is not usable: {exc}") from None
