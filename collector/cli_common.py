"""Opening the registry with its evidence log, for the collector's commands (``collector.cli``,
``collector.security_cli``, the export). The ``--config`` option is in
:mod:`fieldproof.cli_common`, which the anchor commands share."""

from __future__ import annotations

from collector.registry import Registry
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db


def open_registry(cfg: CollectorConfig) -> Registry:
    """The registry with its evidence log: every change is also a log entry."""
    from anchor.evidence import EvidenceLog

    db = open_db(cfg.db_path)
    return Registry(db, EvidenceLog.open(db, cfg.log_origin, key_file=None))
