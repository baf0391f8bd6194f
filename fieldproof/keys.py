"""Ed25519 key files: created on the device, mode 0600, refused when others can read them.

Used for gateway keys and the collector's log key. The private key is never printed, logged
or put in an exception message; only the public key and the id derived from it are shown."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from fieldproof.errors import CredentialError


class KeyFileError(CredentialError):
    """A key file is missing, unreadable, too open or not an Ed25519 key."""


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename), readable by the
    owner only (0600) from the first byte: enrollment state and responses carry identities."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_new_key(
    path: Path, key: PrivateKeyTypes, error: Callable[[str], Exception], exists: str
) -> None:
    """Write ``key`` (PKCS#8 PEM) readable by its owner only from the first byte, fsync'd.
    Never overwrites: an existing file raises ``error(exists)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise error(exists) from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)


def read_private_key(
    path: Path, error: Callable[[str], Exception], missing: str
) -> PrivateKeyTypes:
    """An unencrypted PEM private key, refused (``error``) when group or others can read it,
    when it is missing (``missing``) or when it is not a key. Never puts key bytes in a
    message."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(missing) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(
            f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run 'chmod 600 {path}' and check who may have copied it"
        )
    try:
        return load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise error(f"{path} is not an unencrypted PEM private key") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None


def create_key_file(path: Path) -> Ed25519PrivateKey:
    """Generate a key and write it, readable by the owner only. Never overwrites a key."""
    key = Ed25519PrivateKey.generate()
    write_new_key(
        path,
        key,
        KeyFileError,
        f"{path} already exists; refusing to overwrite a key. Move it away first if you "
        "really mean to replace this device's identity.",
    )
    return key


def load_key_file(path: Path) -> Ed25519PrivateKey:
    """Load a key, insisting that only its owner can read it."""
    key = read_private_key(
        path,
        KeyFileError,
        f"no key at {path}; create one on this device with 'fieldproof gateway init'",
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a key that is not Ed25519")
    return key
