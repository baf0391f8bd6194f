"""What the commands of several rooms share: the collector's ``--config`` option and loading
it into a clean CLI error, period bounds as an inspector or operator types them, a small file
read with a clear error, and writing a file so a crash never leaves half of it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click

from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.errors import ConfigError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="collector TOML (default: built-in defaults and FIELDPROOF_COLLECTOR__* variables)",
)


def load_config_or_exit(path: Path | None) -> CollectorConfig:
    """The collector config, or a CLI error naming the key and value that are wrong."""
    try:
        return load_collector_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def parse_time(text: str) -> float:
    """Unix seconds, or ISO 8601 (``2025-06-01``, ``2025-06-01T06:00``, with ``Z`` or an offset;
    without one it is UTC, so a bundle means the same everywhere)."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither Unix seconds nor an ISO 8601 date/time (2025-06-01T06:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: a signed note is a few hundred bytes; anything much larger is the wrong file
_MAX_NOTE_FILE = 64 * 1024


def read_small(path: Path, option: str) -> bytes:
    """A checkpoint (signed note) file, or a usage error saying what is wrong with it."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_NOTE_FILE + 1)
    except OSError as exc:
        raise click.UsageError(f"{option}: cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_NOTE_FILE:
        raise click.UsageError(f"{option}: {path} is not a checkpoint (signed note): over "
                               f"{_MAX_NOTE_FILE:,} bytes")
    return data


