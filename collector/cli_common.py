"""What every command that reads the collector's configuration shares: the ``--config``
option, loading it into a clean CLI error, and opening the registry with its evidence log.
A module of its own so ``collector.cli``, ``collector.security_cli`` and ``anchor.cli`` can all
import it without importing each other."""

from __future__ import annotations

from pathlib import Path

import click

from collector.registry import Registry
from collector.store import open_db
from fieldproof.config import CollectorConfig, ConfigError, load_collector_config

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


def open_registry(cfg: CollectorConfig) -> Registry:
    """The registry with its evidence log: every change is also a log entry."""
    from anchor.evidence import EvidenceLog

    db = open_db(cfg.db_path)
    return Registry(db, EvidenceLog.open(db, cfg.log_origin, key_file=None))
