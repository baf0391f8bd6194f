"""Step 3 of the verification: every anchor on chain through every node given, read through
the chain readers' one protocol (:class:`anchor.chain_reader.ChainReader`, made by
:func:`anchor.chain_reader.make_reader` from the chain name the bundle gives: nothing here knows
one chain from another). The node must be on the network the anchor names (its genesis block,
when the anchor names one), the transaction must carry the checkpoint's record (origin, size and
root) and be final. The nodes' answers are compared and any disagreement is an error, never
averaged away."""

from __future__ import annotations

from collections.abc import Sequence

from anchor.chain_reader import (
    AnchorReadError,
    ChainMismatchError,
    ChainNodeUnavailable,
    ChainReader,
    make_reader,
)
from fieldproof.errors import FieldproofError
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.formats.bundle import AnchorRef
from fieldproof.formats.checkpoint import Checkpoint
from inspector.findings import FindingCode
from inspector.results import AnchorCheck, CheckpointSummary, Findings, NodeAnswer

__all__ = ["ChainChecker", "anchored_times", "check_anchors", "node_answer"]


def node_answer(reader: ChainReader, url: str, ref: AnchorRef, cp: Checkpoint) -> NodeAnswer:
    """What the node behind ``reader`` says about ``ref`` as the anchor of ``cp``: checked
    (network, record, finality) or why not. Never raises: a hostile node must not crash the
    verifier."""
    try:
        claimed = ref.genesis_id
        if claimed is not None:
            # the chain id (or tag) alone does not tell a network from a copy reusing it
            genesis = reader.genesis()
            if genesis != claimed.lower():
                return NodeAnswer(
                    url, False, f"node {url} is on the chain whose genesis block is {genesis}, "
                    f"the anchor claims genesis {claimed}: ask a node of that network")
        got = reader.read_anchor(ref.tx)
    except ChainNodeUnavailable as exc:
        return NodeAnswer(url, False, f"unreachable: {str(exc)[:300]}", reachable=False)
    except (AnchorReadError, ChainMismatchError) as exc:
        return NodeAnswer(url, False, str(exc)[:500])
    except FieldproofError as exc:
        return NodeAnswer(url, False, f"bad answer: {str(exc)[:300]}")
    except Exception as exc:  # a hostile node must not crash the verifier
        return NodeAnswer(url, False, f"bad answer: {type(exc).__name__}: {str(exc)[:300]}")
    want = AnchorRecord.for_checkpoint(cp.origin, cp.size, cp.root_hash)
    if got.record != want:
        return NodeAnswer(
            url, False,
            f"tx {ref.tx} carries the record for size {got.record.tree_size} root "
            f"{got.record.root_hash.hex()}, not this checkpoint (size {cp.size} root "
            f"{cp.root_hash.hex()}{'' if got.record.matches(cp.origin) else ', another log'})")
    if not got.finalized:
        return NodeAnswer(url, False, f"block {got.block_number} holding tx {ref.tx} is not "
                          "finalized yet (or left the canonical chain); check again later")
    return NodeAnswer(url, True, "", got.block_number, got.block_id.lower(),
                      got.block_timestamp, True, got.sender)


class ChainChecker:
    """Asks every node about every anchor of one chain kind; compares the answers."""

    def __init__(self, chain: str, nodes: Sequence[str], timeout: float) -> None:
        self.chain = chain
        self.nodes = list(nodes)
        self.timeout = timeout
        self._readers: dict[tuple[str, str], ChainReader] = {}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()

    def reader(self, url: str, network: str | None = None) -> ChainReader:
        """One reader per node and network, kept for the whole verification."""
        key = (url, network or "")
        got = self._readers.get(key)
        if got is None:
            got = self._readers[key] = make_reader(self.chain, url, network=network,
                                                   timeout=self.timeout)
        return got

    def ask(self, url: str, ref: AnchorRef, cp: Checkpoint) -> NodeAnswer:
        try:
            reader = self.reader(url, ref.network)
        except (FieldproofError, ValueError) as exc:
            return NodeAnswer(url, False, f"cannot ask {url}: {exc}")
        return node_answer(reader, url, ref, cp)

    def check(self, ref: AnchorRef, cp: Checkpoint, pos: int, out: Findings) -> AnchorCheck:
        check = AnchorCheck(ref, checked=True)
        check.answers = [self.ask(url, ref, cp) for url in self.nodes]
        what = f"anchor of checkpoint {pos} (size {cp.size}) in {self.chain} tx {ref.tx}"
        good = [a for a in check.answers if a.ok]
        bad = [a for a in check.answers if not a.ok]
        for a in bad:
            if not a.reachable:
                out.add(FindingCode.NODE_UNREACHABLE,
                        f"{what}: node {a.node} could not be asked ({a.detail}); the cross-check "
                        "is incomplete")
        facts = {a.facts() for a in good}
        if good and (len(facts) > 1 or any(a.reachable for a in bad)):
            lines = "; ".join(
                f"{a.node}: " + (f"block {a.block_number} {a.block_id} time {a.block_time}"
                                 if a.ok else a.detail)
                for a in check.answers
            )
            out.add(FindingCode.NODE_DISAGREEMENT,
                    f"{what}: the nodes disagree, so no answer is trusted — {lines}")
            return check
        if not good:
            reasons = "; ".join(f"{a.node}: {a.detail}" for a in bad if a.reachable)
            if reasons:
                out.add(FindingCode.ANCHOR_INVALID, f"{what} does not check out: {reasons}")
            return check
        a = good[0]
        check.verified = True
        check.block_time = a.block_time
        claims = (ref.block_number, ref.block_id, ref.block_time)
        if claims != a.facts():
            out.add(FindingCode.ANCHOR_CLAIM_MISMATCH,
                    f"{what}: the bundle claims block {ref.block_number} {ref.block_id} time "
                    f"{ref.block_time}, the chain says block {a.block_number} {a.block_id} time "
                    f"{a.block_time}")
        return check


def check_anchors(
    cps: Sequence[CheckpointSummary], opened: Sequence[Checkpoint | None], chain: str | None,
    nodes: Sequence[str], offline: bool, timeout: float, out: Findings,
) -> None:
    """Every anchor of every valid checkpoint, on ``chain`` through every node (offline: taken
    as the bundle claims, and said so). Marks each checkpoint anchored with its earliest
    verified block time."""
    checker = ChainChecker(chain, nodes, timeout) if chain and not offline else None
    try:
        unchecked = 0
        for pos, (summary, cp) in enumerate(zip(cps, opened, strict=True)):
            if cp is None:
                continue
            for ac in summary.anchors:
                if offline:
                    unchecked += 1
                    summary.anchored = True
                    t = ac.ref.block_time
                    summary.anchor_time = t if summary.anchor_time is None else min(
                        summary.anchor_time, t)
                elif checker is not None and ac.ref.chain == chain:
                    done = checker.check(ac.ref, cp, pos, out)
                    ac.checked, ac.verified = done.checked, done.verified
                    ac.answers = done.answers
                    ac.block_time = done.block_time
                    if done.verified and done.block_time is not None:
                        summary.anchored = True
                        summary.anchor_time = (done.block_time if summary.anchor_time is None
                                               else min(summary.anchor_time, done.block_time))
                else:
                    unchecked += 1
    finally:
        if checker is not None:
            checker.close()
    if offline and unchecked:
        out.add(FindingCode.ANCHORS_NOT_CHECKED,
                f"--offline: {unchecked} anchor(s) were not checked on chain; anchored "
                "ranges and time bounds below rest on the bundle's claims")
    elif unchecked:
        out.add(FindingCode.ANCHORS_NOT_CHECKED,
                f"{unchecked} anchor(s) on other chains than {chain or 'the one checked'} were "
                "not checked", severity="info")


def anchored_times(cps: Sequence[CheckpointSummary]) -> list[int | None]:
    """Per checkpoint, the anchor time of the first anchored checkpoint at or after it in its
    segment: the time by which every entry it proves existed (None: not bounded)."""
    anchored_after: list[int | None] = [None] * len(cps)
    nxt: int | None = None
    for pos in range(len(cps) - 1, -1, -1):
        if nxt is not None and cps[nxt].segment != cps[pos].segment:
            nxt = None
        if cps[pos].anchored:
            nxt = pos
        anchored_after[pos] = nxt
    return [cps[a].anchor_time if a is not None else None for a in anchored_after]
