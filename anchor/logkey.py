"""The collector's log key: the Ed25519 key that signs its checkpoints.

Created on first start in a file only its owner can read (mode 0600), holding one line in Go's
note key format (`PRIVATE+KEY+<origin>+<keyid>+<base64>`), so the same file works with Go's
note tooling. A key file that group or others can read is refused, not silently fixed: a key
that may have leaked must be looked at by a person. The key is never logged; reprs show only
the name and key ID.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from fieldproof.errors import CredentialError
from fieldproof.formats.note import Ed25519Signer, NoteError, check_key_name, generate_key

__all__ = ["LogKeyError", "load_or_create_log_key", "log_origin"]

_KEY_FILE_MAX = 4096


class LogKeyError(CredentialError):
    """The log key file cannot be used safely; the message says what to do."""


def log_origin(base: str, collector_id: str) -> str:
    """The log's origin (and key name), e.g. ``fieldproof.example/log/collector-1``."""
    origin = f"{base.rstrip('/')}/log/{collector_id}"
    try:
        check_key_name(origin)
    except NoteError as exc:
        raise LogKeyError(f"log origin {origin!r} is not usable as a key name: {exc}") from None
    return origin


def load_or_create_log_key(path: str | Path, origin: str) -> Ed25519Signer:
    """The signer in `path`, creating a new key there (mode 0600) if there is no file yet.

    The key's name must equal `origin`: a checkpoint's signature line then names its log, and
    a changed origin in config cannot silently start signing as a different log.
    """
    path = Path(path)
    try:
        check_key_name(origin)
    except NoteError as exc:
        raise LogKeyError(f"log origin {origin!r} is not usable as a key name: {exc}") from None
    if not path.exists():
        _create(path, origin)
    return _load(path, origin)


def _create(path: Path, origin: str) -> None:
    """Write a new key atomically: a crash leaves either no key file or a complete one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    signer = generate_key(origin)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (signer.skey + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if another process created the key meanwhile: theirs wins, no overwrite.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _load(path: Path, origin: str) -> Ed25519Signer:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise LogKeyError(f"cannot open log key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LogKeyError(f"log key path {path} is not a regular file")
        if st.st_mode & 0o077:
            raise LogKeyError(
                f"log key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others "
                f"can read it. Check who may have copied it, then run: chmod 600 {path}"
            )
        data = os.read(fd, _KEY_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > _KEY_FILE_MAX:
        raise LogKeyError(f"log key file {path} is too large to be a key file")
    try:
        signer = Ed25519Signer.from_skey(data.decode("ascii").strip())
    except (UnicodeDecodeError, NoteError) as exc:
        # The exception text never includes the key material.
        raise LogKeyError(f"log key file {path} is not a valid key: {exc}") from None
    if signer.name != origin:
        raise LogKeyError(
            f"log key file {path} is for log {signer.name!r} but the configured origin is "
            f"{origin!r}. Restore the original origin, or point the collector at a new key file "
            "to start a new log (the old log keeps its own key)"
        )
    return signer
