"""Access tokens of the inspector API (collector/api.py): each for one farm or for all farms.

A token reads ``fpa1.<id>.<secret>``: the id (8 hex digits) is public — the operator's list, the
server's log lines and error ids name it — and the secret is 32 random bytes (base64url). The
file (``[api] tokens_file``, default ``<data_dir>/api-tokens.json``, mode 0600) keeps only the
SHA-256 of each whole token, so reading it does not give a usable token; a file that group or
others may read or write is refused all the same. The server rereads the file when it changes,
so ``fieldproof collector api-token revoke`` takes effect at the next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fieldproof.config import CollectorConfig
from fieldproof.errors import ConfigError

__all__ = [
    "TOKEN_PREFIX",
    "ApiToken",
    "TokenFile",
    "TokenStoreError",
    "tokens_path",
]

TOKEN_PREFIX = "fpa1"  # noqa: S105 (a format tag, not a secret)
_TOKEN = re.compile(r"fpa1\.([0-9a-f]{8})\.([A-Za-z0-9_-]{43})")
#: the longest header value looked at; a real token is 57 characters
MAX_TOKEN_TEXT = 200
_MAX_FILE = 1024 * 1024
_FARM = re.compile(r"[A-Za-z0-9._-]{1,64}")
_VERSION = 1


class TokenStoreError(ConfigError):
    """The token file cannot be used (unreadable, malformed, or open to other users)."""


@dataclass(frozen=True)
class ApiToken:
    """One token as stored: never the secret, only its hash."""

    id: str
    #: the farm it may read; None = every farm
    farm: str | None
    label: str
    created_at: float
    expires_at: float | None
    sha256: str

    def may_read(self, farm: str) -> bool:
        return self.farm is None or self.farm == farm

    @property
    def scope(self) -> str:
        return "all farms" if self.farm is None else f"farm {self.farm}"

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def tokens_path(config: CollectorConfig) -> Path:
    return config.api.tokens_file or config.data_dir / "api-tokens.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _parse(data: bytes, path: Path) -> dict[str, ApiToken]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise TokenStoreError(f"{path}: not a token file (invalid JSON)") from None
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise TokenStoreError(f"{path}: not a version {_VERSION} token file")
    rows = doc.get("tokens")
    if not isinstance(rows, list):
        raise TokenStoreError(f"{path}: 'tokens' is not a list")
    out: dict[str, ApiToken] = {}
    for n, row in enumerate(rows):
        try:
            if not isinstance(row, dict) or set(row) != set(ApiToken.__dataclass_fields__):
                raise TypeError
            tok = ApiToken(**row)
            ok = (
                isinstance(tok.id, str)
                and re.fullmatch(r"[0-9a-f]{8}", tok.id) is not None
                and (tok.farm is None or (isinstance(tok.farm, str) and _FARM.fullmatch(tok.farm)))
                and isinstance(tok.label, str)
                and isinstance(tok.created_at, int | float)
                and (tok.expires_at is None or isinstance(tok.expires_at, int | float))
                and isinstance(tok.sha256, str)
                and re.fullmatch(r"[0-9a-f]{64}", tok.sha256) is not None
                and tok.id not in out
            )
        except TypeError:
            ok = False
        if not ok:
            raise TokenStoreError(f"{path}: token entry {n} is malformed")
        out[tok.id] = tok
    return out


def _check_mode(st: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise TokenStoreError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise TokenStoreError(
            f"{path}: group or others may access it (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run chmod 600 {path}"
        )


class TokenFile:
    """The token file: ``check`` for the server (cached, reloaded when the file changes),
    ``create``/``revoke``/``all`` for the operator's CLI (under an exclusive lock)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int, int] | None = None
        self._tokens: dict[str, ApiToken] = {}

    # ------------------------------------------------------------------ reading

    def load(self) -> dict[str, ApiToken]:
        """The tokens now in the file (none if there is no file)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            with self._lock:
                self._seen, self._tokens = None, {}
            return {}
        except OSError as exc:
            raise TokenStoreError(f"{self.path}: cannot open: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            _check_mode(st, self.path)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
            with self._lock:
                if key == self._seen:
                    return self._tokens
            if st.st_size > _MAX_FILE:
                raise TokenStoreError(f"{self.path}: larger than {_MAX_FILE} bytes")
            tokens = _parse(f.read(_MAX_FILE + 1), self.path)
        with self._lock:
            self._seen, self._tokens = key, tokens
        return tokens

    def check(self, text: str) -> ApiToken | None:
        """The token ``text`` names if it is valid, unexpired and not revoked, else None."""
        tokens = self.load()
        m = _TOKEN.fullmatch(text) if len(text) <= MAX_TOKEN_TEXT else None
        tok = tokens.get(m.group(1)) if m else None
        # compare a digest either way, so an unknown id costs the same as a wrong secret
        want = tok.sha256 if tok is not None else "0" * 64
        same = hmac.compare_digest(_digest(text if m else "-"), want)
        if tok is None or not same or tok.expired(self.clock()):
            return None
        return tok

    def peek_id(self, text: str) -> str | None:
        """The public id part of a well-formed token (for log lines), never the secret."""
        m = _TOKEN.fullmatch(text) if len(text) <= MAX_TOKEN_TEXT else None
        return m.group(1) if m else None

    def all(self) -> list[ApiToken]:
        return sorted(self.load().values(), key=lambda t: (t.created_at, t.id))

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiToken]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield dict(self.load())
        finally:
            os.close(fd)

    def _write(self, tokens: dict[str, ApiToken]) -> None:
        doc: dict[str, Any] = {
            "version": _VERSION,
            "tokens": [asdict(t) for t in sorted(tokens.values(), key=lambda t: t.created_at)],
        }
        data = (json.dumps(doc, indent=1) + "\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def create(
        self, farm: str | None, label: str = "", ttl_s: float | None = None
    ) -> tuple[str, ApiToken]:
        """A new token for ``farm`` (None: all farms); the text is returned once, never kept."""
        if farm is not None and not _FARM.fullmatch(farm):
            raise TokenStoreError(f"farm must be 1 to 64 of A-Z a-z 0-9 . _ -, not {farm!r}")
        if len(label) > 200 or any(ord(c) < 32 for c in label):
            raise TokenStoreError("label must be at most 200 printable characters")
        if ttl_s is not None and not ttl_s > 0:
            raise TokenStoreError("a token's lifetime must be positive")
        with self._locked() as tokens:
            token_id = secrets.token_hex(4)
            while token_id in tokens:
                token_id = secrets.token_hex(4)
            text = f"{TOKEN_PREFIX}.{token_id}.{secrets.token_urlsafe(32)}"
            now = self.clock()
            tok = ApiToken(
                token_id, farm, label, now, None if ttl_s is None else now + ttl_s, _digest(text)
            )
            tokens[token_id] = tok
            self._write(tokens)
        return text, tok

    def revoke(self, token_id: str) -> ApiToken | None:
        """Remove a token; the one removed, or None if there is no such id."""
        with self._locked() as tokens:
            tok = tokens.pop(token_id, None)
            if tok is not None:
                self._write(tokens)
        return tok
