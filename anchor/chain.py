"""Anchoring on any chain behind one protocol: one state, one row, one step report, one error
vocabulary, whether the chain is VeChainThor (:mod:`anchor.thor_chain` over
:mod:`anchor.anchoring`) or an EVM chain (:mod:`anchor.evm_chain` over :mod:`anchor.evm`).

An anchorer's ``step()`` submits the newest un-anchored checkpoint, polls what is in flight and
moves each anchor pending → included → finalized (or failed, with a reason); only finalized
counts. How a chain gets there stays inside its anchorer: Thor rebuilds a transaction whose
blockRef expired and backs off after a refusal; an EVM chain bumps fees on the same nonce and
takes a fresh nonce when another transaction used it. A ledger reads one chain's anchor store
without a key or a lock, for ``anchor status``, the collector's metrics and the export.

:func:`make_anchorer` and :func:`open_ledgers` are the only places that choose a chain by its
name; every caller works through the protocol. Each chain keeps its own store file
(``anchors-thor.sqlite``, ``anchors-evm.sqlite``) and tables, unchanged: the ledgers map both
to :class:`AnchorRow`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from anchor.chain_reader import AnchorReadError, ChainMismatchError, ChainNodeUnavailable
from fieldproof.errors import ChainError, ConfigError
from fieldproof.formats.bundle import AnchorRef

if TYPE_CHECKING:
    from fieldproof.config import CollectorConfig

__all__ = [
    "CHAINS",
    "AnchorLedger",
    "AnchorReadError",
    "AnchorRow",
    "AnchorSetupError",
    "AnchorState",
    "AnchorerError",
    "ChainAnchorer",
    "ChainMismatchError",
    "ChainNodeUnavailable",
    "CheckpointLike",
    "CheckpointSource",
    "NodeNote",
    "StepReport",
    "anchor_rows",
    "make_anchorer",
    "open_ledgers",
    "store_path",
]

#: every chain an anchor store may exist for, in the order ``anchor status`` lists them
CHAINS = ("thor", "evm")


# ----------------------------------------------------------------------------- errors


class AnchorerError(ChainError):
    """Anchoring needs an operator (a key that does not load, a store another anchorer holds, a
    log that forked); the message says what to do. Chain-specific errors derive from it."""


class AnchorSetupError(ConfigError):
    """Anchoring is not configured in a way that can work; the message says what to set."""


# ----------------------------------------------------------------------------- vocabulary


class AnchorState(StrEnum):
    """Where an anchor is, on every chain; only ``finalized`` counts as anchored."""

    PENDING = "pending"
    INCLUDED = "included"
    FINALIZED = "finalized"
    FAILED = "failed"


class CheckpointLike(Protocol):
    """What anchoring needs of a signed checkpoint."""

    @property
    def origin(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def root_hash(self) -> bytes: ...


class CheckpointSource(Protocol):
    """Where the newest signed checkpoint comes from (the evidence log)."""

    def latest_checkpoint(self) -> tuple[CheckpointLike, bytes] | None:
        """(checkpoint, its signed note bytes), or None while the log has no checkpoint."""
        ...


@dataclass(frozen=True)
class AnchorRow:
    """One anchor, the same for every chain: what ``anchor status``, the collector's metrics
    and the export read.

    ``network``: the Thor genesis id, or ``evm:<chain id>``. ``detail``: why the anchor is
    where it is (how far an included one is from final and why, why a pending one waits, why a
    failed one failed). The four finality fields are Thor's, for an included anchor as of the
    last step: blocks the node's finalized block must still advance, the best block number at
    which finality is expected, and the node's finalized and best block numbers. ``origin``
    and ``ref`` (the bundle's claim for a finalized anchor) are for the export, not shown."""

    chain: str
    network: str
    tree_size: int
    root_hash: str
    state: AnchorState
    tx_id: str | None
    block_number: int | None
    block_id: str | None
    block_timestamp: int | None
    reason: str | None
    detail: str | None = None
    blocks_behind_finalized: int | None = None
    expected_final_at_best: int | None = None
    node_finalized: int | None = None
    node_best: int | None = None
    origin: str = field(default="", compare=False)
    ref: AnchorRef | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``anchor status --json`` prints it (without ``origin`` and ``ref``)."""
        d = dict(self.__dict__)
        del d["origin"], d["ref"]
        d["state"] = str(self.state)
        return d


@dataclass
class StepReport:
    """What one ``step()`` did, on any chain. ``node_ok`` False: the node could not be used
    this step (down, answering errors, not synced: ``paused`` says why); nothing was lost, step
    again later. ``problems``: what an operator may have to act on. ``not_final``: per included
    anchor id, how far it is from final and why (observed, not done)."""

    created: list[int] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    included: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    reorged: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    node_ok: bool = True
    paused: str | None = None
    not_final: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeNote:
    """What the chain node said at the anchorer's last step, for ``anchor status``."""

    chain_label: str
    checked_at: float
    summary: str
    paused: str | None

    def explain(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.checked_at))
        return f"{self.chain_label} node at the last step ({when}): {self.summary}"


# ----------------------------------------------------------------------------- protocols


class ChainAnchorer(Protocol):
    """Anchors a log's checkpoints on one chain, one ``step()`` at a time; holds the store's
    lock and the key until ``close()``."""

    @property
    def chain(self) -> str: ...

    def step(self) -> StepReport:
        """Poll in-flight anchors, advance their states, submit the newest checkpoint if due.
        A node on another network raises :class:`ChainMismatchError`."""
        ...

    def close(self) -> None: ...


class AnchorLedger(Protocol):
    """One chain's anchor store, read without a key or a lock (``anchor run`` may hold it)."""

    @property
    def chain(self) -> str: ...

    def rows(self) -> list[AnchorRow]:
        """Every anchor in the store, oldest first."""
        ...

    def node_note(self) -> NodeNote | None:
        """What the node said at the anchorer's last step, when the chain keeps that."""
        ...

    def genesis_by_network(self, config: CollectorConfig, notes: list[str]) -> dict[str, str]:
        """Genesis block hashes to name in the bundle per network, for anchors whose rows do
        not carry one; when a node cannot be asked, a note for the bundle says so."""
        ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- the factory


def store_path(config: CollectorConfig, chain: str) -> Path:
    """The anchor store of ``chain`` next to the collector's database."""
    return config.data_dir / f"anchors-{chain}.sqlite"


def make_anchorer(config: CollectorConfig, source: CheckpointSource) -> ChainAnchorer:
    """The anchorer ``[anchor]`` configures, anchoring ``source``'s newest checkpoint: the one
    place a chain's anchorer is chosen by its name."""
    a = config.anchor
    if a.chain == "none":
        raise AnchorSetupError('[anchor] chain is "none"; set it to "thor" or "evm"')
    if not a.url:
        raise AnchorSetupError("[anchor] url must name the chain node's API")
    if a.key_file is None and a.key_env is None:
        raise AnchorSetupError(
            "[anchor] needs key_file (a 0600 file with the account's private key in hex) or "
            "key_env (the environment variable holding it)"
        )
    if a.chain == "thor":
        from anchor.thor_chain import ThorChainAnchorer

        return ThorChainAnchorer.from_config(config, source)
    from anchor.evm_chain import EvmChainAnchorer

    return EvmChainAnchorer.from_config(config, source)


def open_ledgers(
    config: CollectorConfig, paths: Mapping[str, Path | None] | None = None
) -> list[AnchorLedger]:
    """The anchor store of every chain this collector has anchored on (a collector may have
    moved from one chain to another: its old anchors still count). ``paths``: a store to read
    instead of the collector's, per chain."""
    ledgers: list[AnchorLedger] = []
    for chain in CHAINS:
        path = (paths or {}).get(chain) or store_path(config, chain)
        if not path.exists():
            continue
        if chain == "thor":
            from anchor.thor_chain import ThorLedger

            ledgers.append(ThorLedger(path))
        else:  # web3 costs ~1 s to import: only an EVM store loads it
            from anchor.evm_chain import EvmLedger

            ledgers.append(EvmLedger(path))
    return ledgers


def anchor_rows(config: CollectorConfig) -> list[AnchorRow]:
    """Every anchor recorded for this collector, on whichever chains it used, by tree size."""
    rows: list[AnchorRow] = []
    for ledger in open_ledgers(config):
        try:
            rows.extend(ledger.rows())
        finally:
            ledger.close()
    return sorted(rows, key=lambda r: (r.tree_size, r.chain))
