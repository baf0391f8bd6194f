"""Reading an anchor back from any chain, as an inspector does: one protocol, one record, one
error vocabulary for VeChainThor (:mod:`anchor.thor_reader`) and EVM chains
(:mod:`anchor.evm_reader`).

A chain reader holds no key and no store and imports no anchor writer (the layering test
enforces it), so what runs on a stranger's laptop stays small. The errors defined here are
shared with the writers (:mod:`anchor.chain` re-exports them): a node that cannot be asked, a
node of another network and an anchor that does not check out mean the same thing on every
chain, so callers catch them without knowing which chain they talk to."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from fieldproof.errors import ChainError, ConfigError
from fieldproof.formats.anchor_record import AnchorRecord

log = logging.getLogger("fieldproof.anchor")


class ChainNodeUnavailable(ChainError):
    """The chain node could not be asked (down, timed out, throttled): nothing was changed,
    ask again later or another node."""


class ChainMismatchError(ChainError):
    """The node serves another network than the one configured or claimed: point the URL at a
    node of the intended network."""


class NodeAnswerError(ChainError):
    """A node's answer is not what its API promises: too large, of the wrong shape, or at odds
    with what it answered before (a block that does not follow the one read before it). The
    node is hostile or broken: ask another one."""


class NodeTooSlow(ChainNodeUnavailable):
    """A node took longer than its time budget to answer (one request, or a whole scan)."""


class AnchorReadError(ChainError):
    """An anchor does not check out on the chain (unknown tx, not in a block, reverted, no
    anchor record, not on the main chain); the message says which check failed."""


@dataclass(frozen=True)
class ChainAnchor:
    """An anchor as a reader finds it on a node: the record its transaction carries, the block
    holding it and whether that block is final. ``network``: the genesis block id on Thor, the
    decimal chain id on an EVM chain (the bundle's ``AnchorRef.network``)."""

    chain: str
    network: str
    tx_id: str
    sender: str
    record: AnchorRecord
    block_number: int
    block_id: str
    block_timestamp: int
    finalized: bool


#: the chains :func:`make_reader` has a reader for, as bundles name them
CHAINS = ("thor", "evm")

#: blocks one :meth:`ChainReader.scan_anchors` reads at most unless told otherwise: a day and a
#: bit of Thor mainnet (10 s blocks), ~2.8 h of Ethereum (12 s), one request per block
DEFAULT_SCAN_BLOCKS = 10_000
#: anchors one scan keeps at most (a log anchors once per checkpoint; more is hostile)
MAX_SCAN_ANCHORS = 10_000
#: the largest answer a reader or an anchorer takes from a node: a block with all its
#: transactions (Thor ``expanded=true``, EVM full transactions; the Thor client's bounds per
#: kind of answer are in :mod:`anchor.thor_client`). A 40 M-gas Thor block or a 36 M-gas Ethereum
#: block holds at most ~2.5 MB of calldata (16 gas a byte), ~5 MB as hex: 16 MiB leaves room
MAX_NODE_ANSWER_BYTES = 16 * 1024 * 1024
#: transactions one block may list: a 40 M-gas block fits at most ~1,900 (21,000 gas each);
#: a node listing more is answering something else
MAX_BLOCK_TRANSACTIONS = 10_000
#: seconds one scan may take per node before it stops and says where (a node answering each
#: block just under its timeout would otherwise hold a 10,000-block scan for a day)
DEFAULT_SCAN_SECONDS = 3600.0


@dataclass
class AnchorScan:
    """What a bounded scan of a chain for one log's anchors found: every transaction in blocks
    ``first_block`` … ``last_block`` whose data is an anchor record of the log, each read back
    and checked as :meth:`ChainReader.read_anchor` does. ``head``: the node's best block when
    the scan began; ``complete``: the whole range asked for was read (else the scan stopped at
    its block budget, its time budget or at a node's bad answer, and ``last_block`` says
    where). ``unreadable``: candidate transactions whose read-back failed (tx id, why), kept so
    a node hiding them is seen. ``stopped``: why the scan ended before its block budget (the
    node stopped answering, answered something no node should, or the time budget ran out),
    empty when it did not."""

    chain: str
    first_block: int
    last_block: int
    head: int
    complete: bool
    anchors: list[ChainAnchor] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    transactions_seen: int = 0
    stopped: str = ""

    @property
    def blocks(self) -> int:
        return max(0, self.last_block - self.first_block + 1)


class ScannedBlock(NamedTuple):
    """One block as a reader read and checked it: its id (Thor) or hash (EVM), its parent's,
    how many transactions it lists, and those whose data is an anchor record of the log."""

    id: str
    parent: str
    transactions: int
    candidates: list[str]


def walk_blocks(
    scan: AnchorScan,
    last: int,
    max_blocks: int,
    max_seconds: float | None,
    started: float,
    read_block: Callable[[int], ScannedBlock],
) -> dict[str, int]:
    """The chain-independent part of a scan: read blocks ``scan.first_block`` … ``last`` (at
    most ``max_blocks``, within ``max_seconds`` from ``started``), each the child of the one
    read before it, and collect the candidate transactions (tx id → the block that listed
    it). ``read_block`` reads one block and raises :class:`ChainError` when the node cannot or
    will not give it. Fills ``scan.last_block``, ``transactions_seen``, ``stopped`` and
    ``complete``; the caller reads the candidates back."""
    candidates: dict[str, int] = {}
    parent: str | None = None
    end = min(last, scan.first_block + max_blocks - 1)
    for number in range(scan.first_block, end + 1):
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            scan.stopped = (f"the scan's time budget of {max_seconds:g} s ran out before "
                            f"block {number} (a slow node)")
            break
        try:
            block = read_block(number)
            if parent is not None and block.parent != parent:
                raise NodeAnswerError(
                    f"block {number}'s parent is {block.parent}, not block {number - 1} "
                    f"({parent}) as this node answered it: the chain changed under the scan "
                    "(a reorganisation) or the node lies; run again")
        except ChainError as exc:
            scan.stopped = f"block {number}: {str(exc)[:400]}"
            break
        parent = block.id
        scan.transactions_seen += block.transactions
        for tx_id in block.candidates:
            candidates.setdefault(tx_id, number)
        scan.last_block = number
        if len(candidates) > MAX_SCAN_ANCHORS:
            scan.stopped = f"over {MAX_SCAN_ANCHORS:,} candidate anchors by block {number}"
            log.warning("anchor scan on %s stopped at block %d: over %d candidate anchors",
                        scan.chain, number, MAX_SCAN_ANCHORS)
            break
    scan.complete = not scan.stopped and scan.last_block >= last
    return candidates


class ChainReader(Protocol):
    """Reads anchors from one chain's node: the inspector's side of the chain protocol."""

    @property
    def chain(self) -> str:
        """The chain's name as bundles spell it (``thor``, ``evm``)."""
        ...

    def read_anchor(self, tx_id: str) -> ChainAnchor:
        """The anchor that transaction ``tx_id`` carries, its block and finality; raises
        :class:`AnchorReadError` when it does not check out, :class:`ChainNodeUnavailable`
        when the node cannot be asked."""
        ...

    def genesis(self) -> str:
        """The id (Thor) or hash (EVM) of the node's block 0, lower-case hex with ``0x``: what
        tells one network from a copy reusing its chain id or tag."""
        ...

    def scan_anchors(
        self,
        origin: str,
        from_block: int,
        to_block: int | None = None,
        *,
        max_blocks: int = DEFAULT_SCAN_BLOCKS,
        max_seconds: float | None = DEFAULT_SCAN_SECONDS,
    ) -> AnchorScan:
        """Every anchor of the log ``origin`` (records whose origin hash is SHA-256 of it) in
        blocks ``from_block`` … ``to_block`` (default: the head), whoever sent it, reading at
        most ``max_blocks`` blocks from ``from_block`` on, for at most ``max_seconds``. Neither
        chain indexes what an anchor carries (a Thor anchor is a value-0 clause with no event,
        which ``/logs/transfer`` does not record; an EVM anchor is plain calldata), so this
        reads every block: one request each, bounded. Every answer is hostile: bounded in
        bytes and time, its shape checked, each block the one asked for and the child of the
        one before. A node that stops answering or answers what no node should mid-scan ends
        the scan there (``stopped`` says why; what was read is kept). Raises
        :class:`ChainNodeUnavailable` when the node cannot be asked at all, and
        :class:`NodeAnswerError` when its first answers (genesis, head) are unusable."""
        ...

    def close(self) -> None:
        """Release the node connection."""
        ...


def make_reader(
    chain: str,
    url: str,
    *,
    network: str | None = None,
    confirmations: int = 12,
    timeout: float = 10.0,
) -> ChainReader:
    """A reader of ``chain`` through the node at ``url``. ``network`` pins the network the
    node must serve (Thor: genesis id; EVM: decimal chain id); ``confirmations``: how deep an
    EVM block must be when the node serves no ``finalized`` tag; ``timeout``: seconds per
    request. The one place a reader is chosen by the chain's name."""
    if chain == "thor":
        from anchor.thor_reader import ThorChainReader

        return ThorChainReader(url, genesis_id=network, timeout=timeout)
    if chain == "evm":
        from anchor.evm_reader import EvmChainReader

        return EvmChainReader(
            url, chain_id=None if network is None else int(network), confirmations=confirmations,
            timeout_s=timeout,
        )
    raise ConfigError(f"no chain reader for chain {chain!r}: name {' or '.join(CHAINS)}")


# ----------------------------------------------------------------------------- display

#: public explorers' transaction pages per chain and network (Thor: genesis id; EVM: chain id)
_EXPLORERS: dict[str, dict[str, str]] = {
    "thor": {
        "0x00000000851caf3cfdb6e899cf5958bfb1ac3413d346d43539627e6be7ec1b4a":
            "https://explore.vechain.org/transactions/{tx}",
        "0x000000000b2bce3c70bc649a02749e8687721b09ed2e15997f466536b20bb127":
            "https://explore-testnet.vechain.org/transactions/{tx}",
    },
    "evm": {
        "1": "https://etherscan.io/tx/{tx}",
        "11155111": "https://sepolia.etherscan.io/tx/{tx}",
        "10": "https://optimistic.etherscan.io/tx/{tx}",
        "137": "https://polygonscan.com/tx/{tx}",
        "100": "https://gnosisscan.io/tx/{tx}",
        "8453": "https://basescan.org/tx/{tx}",
        "42161": "https://arbiscan.io/tx/{tx}",
    },
}
#: names of the public networks, so a report says "mainnet" rather than a hash
_NETWORK_NAMES: dict[str, dict[str, str]] = {
    "thor": {
        "0x00000000851caf3cfdb6e899cf5958bfb1ac3413d346d43539627e6be7ec1b4a": "mainnet",
        "0x000000000b2bce3c70bc649a02749e8687721b09ed2e15997f466536b20bb127": "testnet",
    },
    "evm": {"1": "Ethereum mainnet", "11155111": "Sepolia", "10": "OP Mainnet",
            "137": "Polygon PoS", "100": "Gnosis", "8453": "Base", "42161": "Arbitrum One"},
}


def _short(block_hash: str) -> str:
    return f"{block_hash[:12]}…" if len(block_hash) > 14 else block_hash


def explorer_url(chain: str, network: str, tx: str) -> str | None:
    """A public explorer's page for transaction ``tx`` on ``network`` of ``chain`` (as bundles
    name them), None for a network without one we know (a dev or private chain): reports link
    anchors without knowing which chain they are on."""
    pattern = _EXPLORERS.get(chain, {}).get(network)
    return pattern.format(tx=tx) if pattern else None


def network_label(chain: str, network: str, genesis: str | None = None) -> str:
    """The network an anchor is on, in plain words for a report: a Thor network by its genesis
    id, an EVM chain by its chain id and (when the bundle recorded it) genesis hash, which is
    what tells a chain from a copy reusing its id."""
    name = _NETWORK_NAMES.get(chain, {}).get(network)
    if chain == "thor":
        return f"VeChainThor {name} (genesis {_short(network)})" if name else \
            f"VeChainThor, genesis {_short(network)}"
    if chain == "evm":
        label = f"EVM chain id {network}" + (f" ({name})" if name else "")
        return label + (f", genesis {_short(genesis)}" if genesis else
                        " (no genesis recorded)")
    return f"{chain} network {_short(network)}"
