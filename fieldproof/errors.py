"""One root for every error fieldproof raises on purpose, so a caller can catch ours and only
ours. The branches say who can fix it:

- :class:`FormatError` — bytes that are not what a format says (a message, a status, a bundle,
  a checkpoint); the sender or the file is at fault. Also a ``ValueError``: callers that parse
  treat it as one.
- :class:`ConfigError` — a config file or command line that cannot work; the user fixes it.
- :class:`CredentialError` — a key, certificate or token that is missing, unreadable or wrong.
- :class:`StorageError` — a database, spool or data directory that cannot be written or read.
- :class:`ChainError` — a chain node or a witness (the outside parties that fix the log in
  time) that cannot be reached, is on another network, or refuses what we send.
- :class:`DeviceError` — a sensor, bus or serial node that does not answer as it should; the
  gateway records a missing reading and goes on.
"""

from __future__ import annotations


class FieldproofError(Exception):
    """The root: every error fieldproof raises on purpose derives from it."""


class FormatError(FieldproofError, ValueError):
    """Bytes that are not what their format says."""


class ConfigError(FieldproofError, ValueError):
    """A configuration or command line that cannot work as given."""


class CredentialError(FieldproofError):
    """A key, certificate or token that is missing, unreadable or does not match."""


class StorageError(FieldproofError):
    """A database, spool or data directory that cannot be written or read."""


class ChainError(FieldproofError):
    """A chain node that cannot be reached, is on another network, or refuses a transaction."""


class DeviceError(FieldproofError):
    """A sensor, bus or serial node that does not answer as it should."""
