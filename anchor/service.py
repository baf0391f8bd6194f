"""``fieldproof anchor run``: anchor the collector's newest checkpoint on the configured chain.

Runs beside the collector (its own process, its own lock): it reads checkpoints from the
collector's database — it never needs the log key — and keeps anchor states in a store of its
own next to it (``anchors-thor.sqlite`` or ``anchors-evm.sqlite``). Both chains share one shape:
``step()`` submits the newest un-anchored checkpoint and advances pending → included →
finalized (or failed, with a reason)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anchor import anchoring
from anchor.evidence import EvidenceLog
from anchor.thor import SecretKey
from anchor.thor_client import ThorClient
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.errors import ConfigError

if TYPE_CHECKING:  # web3 costs ~1 s to import: only an EVM anchorer or store loads it
    from anchor import evm

log = logging.getLogger("fieldproof.anchor")


class AnchorSetupError(ConfigError):
    """Anchoring is not configured in a way that can work; the message says what to set."""


@dataclass(frozen=True)
class AnchorView:
    """One anchor, the same for every chain: what the status command and exporters show."""

    chain: str
    network: str  # Thor genesis id, or "evm:<chain id>"
    tree_size: int
    root_hash: str
    state: str
    tx_id: str | None
    block_number: int | None
    block_id: str | None
    block_timestamp: int | None
    reason: str | None
    #: why it is where it is: how far an included anchor is from final and why, why a pending
    #: one waits (the node not synced, the last refusal), why a failed one failed
    detail: str | None = None
    #: Thor, included, as of the last anchoring step: blocks the node's finalized block must
    #: still advance to reach the anchor's, the best block number at which finality is expected
    #: (its epoch's checkpoint + 2 epochs), and the node's finalized and best block numbers
    blocks_behind_finalized: int | None = None
    expected_final_at_best: int | None = None
    node_finalized: int | None = None
    node_best: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def store_path(config: CollectorConfig, chain: str) -> Path:
    return config.data_dir / f"anchors-{chain}.sqlite"


def _key(config: CollectorConfig) -> SecretKey:
    a = config.anchor
    if a.key_file is None and a.key_env is None:
        raise AnchorSetupError(
            "[anchor] needs key_file (a 0600 file with the account's private key in hex) or "
            "key_env (the environment variable holding it)"
        )
    return anchoring.load_key(a.key_file, a.key_env)


class AnchorService:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        a = config.anchor
        if a.chain == "none":
            raise AnchorSetupError('[anchor] chain is "none"; set it to "thor" or "evm"')
        if not a.url:
            raise AnchorSetupError("[anchor] url must name the chain node's API")
        self.db = open_db(config.db_path)
        self.evidence = EvidenceLog.open(self.db, config.log_origin, key_file=None)
        key = _key(config)
        self.thor: anchoring.Anchorer | None = None
        self.evm: evm.EvmAnchorer | None = None
        if a.chain == "thor":
            sponsor = anchoring.load_key_file(a.sponsor_key_file) if a.sponsor_key_file else None
            self.thor = anchoring.Anchorer(
                anchoring.AnchorStore(store_path(config, "thor")),
                ThorClient(a.url),
                self.evidence,
                key,
                sponsor=sponsor,
            )
        else:
            if a.chain_id is None:
                raise AnchorSetupError("[anchor] chain_id is required for an EVM chain")
            from anchor import evm

            self.evm = evm.EvmAnchorer(
                evm.EvmConfig(
                    url=a.url,
                    chain_id=a.chain_id,
                    finality=a.finality,
                    confirmations=a.confirmations,
                ),
                key.secret_bytes(),
                store_path(config, "evm"),
            )

    def step(self) -> bool:
        """One pass; True when the node answered."""
        if self.thor is not None:
            report = self.thor.step()
            for error in report.errors:
                log.warning("%s", error)
            for anchor_id in report.finalized:
                log.info("anchor %d finalized", anchor_id)
            for anchor_id, gap in report.not_final.items():
                log.info("anchor %d: %s", anchor_id, gap.explain())
            return report.node_ok
        assert self.evm is not None
        from anchor import evm

        latest = self.evidence.latest()
        ref = None
        if latest is not None:
            cp = latest.checkpoint
            ref = evm.CheckpointRef(cp.origin, cp.size, cp.root_hash)
        evm_report = self.evm.step(ref)
        for note in evm_report.notes:
            log.warning("%s", note)
        for anchor_id, old, new in evm_report.changed:
            log.info("anchor %d: %s -> %s", anchor_id, old, new)
        if evm_report.error:
            log.warning("chain node: %s; retrying", evm_report.error)
        return evm_report.error is None

    def run(self, stop: threading.Event) -> None:
        delay = self.config.anchor.interval_s
        while not stop.is_set():
            ok = self.step()
            delay = self.config.anchor.interval_s if ok else min(delay * 2, 600.0)
            stop.wait(delay)

    def close(self) -> None:
        if self.thor is not None:
            self.thor.close()
        if self.evm is not None:
            self.evm.close()
        self.db.close()


def anchor_views(config: CollectorConfig) -> list[AnchorView]:
    """Every anchor recorded for this collector, on whichever chains it used."""
    views: list[AnchorView] = []
    thor_path = store_path(config, "thor")
    if thor_path.exists():
        store = anchoring.AnchorStore(thor_path)
        try:
            status = anchoring.node_status(store)
            for r in anchoring.anchor_status(store):
                d = r.to_dict()
                gap = None if status is None else anchoring.finality_gap_of(r, status)
                views.append(
                    AnchorView(
                        "thor",
                        str(d.get("genesis_id") or ""),
                        int(d["tree_size"]),
                        _hex(d["root_hash"]),
                        str(d["state"]),
                        d.get("tx_id"),
                        d.get("block_number"),
                        d.get("block_id"),
                        d.get("block_timestamp"),
                        d.get("failure_reason"),
                        anchoring.anchor_detail(r, status),
                        None if gap is None else gap.blocks_behind,
                        None if gap is None else gap.expected_at_best,
                        None if gap is None else gap.finalized_number,
                        None if gap is None else gap.best_number,
                    )
                )
        finally:
            store.close()
    evm_path = store_path(config, "evm")
    if evm_path.exists():
        from anchor import evm

        evm_store = evm.EvmAnchorStore(evm_path)
        try:
            for row in evm_store.rows():
                views.append(
                    AnchorView(
                        "evm",
                        f"evm:{row.chain_id}",
                        row.tree_size,
                        row.root_hash.hex(),
                        row.state,
                        row.tx_hash,
                        row.block_number,
                        row.block_hash,
                        row.block_timestamp,
                        row.reason,
                    )
                )
        finally:
            evm_store.close()
    return sorted(views, key=lambda v: (v.tree_size, v.chain))


def thor_node_status(config: CollectorConfig) -> anchoring.NodeStatus | None:
    """What the Thor node said at the anchorer's last step (head, finality, synced)."""
    path = store_path(config, "thor")
    if not path.exists():
        return None
    store = anchoring.AnchorStore(path)
    try:
        return anchoring.node_status(store)
    finally:
        store.close()


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes | bytearray) else str(value)
