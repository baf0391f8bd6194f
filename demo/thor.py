"""The demo's VeChainThor: a real ``thor solo`` node it starts, the anchor key it gives the
anchorer, and making the anchors final the honest way.

Finality in solo mode (thor v2.4.4, ``bft/engine.go``, ``soloMockedEngine``): every epoch
(180 blocks) is taken as committed, and ``/blocks/finalized`` is the epoch checkpoint two
epochs behind the best block's — ``floor(best / 180) * 180 - 360`` once best reaches 360,
genesis before that. So an anchor in block b is final once best reaches
``ceil((b + 360) / 180) * 180``: 540 blocks for the first anchors of a fresh node. The node
packs a block for every transaction posted (``--on-demand``; a block's timestamp then runs
ahead of the clock by the block interval), so the demo moves the chain there by posting cheap
transactions (0 VET from a dev account to itself), one block each, and then checks every
anchor on the node with what an inspector runs (:func:`demo.chains.check_anchors`, through the
chain reader, finality required). If the node does not finalize within
:data:`MAX_DRIVE_BLOCKS` the demo says "included, not final" with the reason and fails:
finality is never assumed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from anchor import thor
from anchor.thor_client import ThorClient
from fieldproof.services import ThorSolo

if TYPE_CHECKING:
    pass

#: Private keys of two of the ten funded dev accounts of thor solo's devnet genesis
#: (``genesis/devnet.go``, ``DevAccounts()``, thor v2.4.4). Public test keys, known to everyone
#: who has read thor's source: they only work on a throwaway solo chain, never anywhere else.
#: The first dev account (99f05005…) packs solo's blocks; the demo leaves it alone.
ANCHOR_DEV_KEY = "7b067f53d350f1cf20ec13df416b7b73e88a1dc7331bc904b92108b1e76a08b1"
DRIVER_DEV_KEY = "f4a1a17039216f535d42ec23732c79943ffb45a089fbb78a14daad0dae93e991"

#: Solo finalizes 360..540 blocks behind best; past this many blocks more it will not.
MAX_DRIVE_BLOCKS = 1500


def start_node(workdir: Path) -> ThorSolo:
    node = ThorSolo(workdir)
    node.start()
    return node


def write_anchor_key(path: Path) -> Path:
    """The anchoring account's key, as the anchor config expects it: a 0600 file, hex."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ANCHOR_DEV_KEY + "\n")
    path.chmod(0o600)
    return path


def anchor_toml(url: str, key_file: Path) -> str:
    return f'[anchor]\nchain = "thor"\nurl = "{url}"\nkey_file = "{key_file}"\ninterval_s = 1\n'


@dataclass(frozen=True)
class Drive:
    """What moving the chain forward did."""

    final: bool
    target_block: int
    txs_posted: int
    best_before: int
    best_after: int
    finalized: int

    def explain(self) -> str:
        if self.final:
            moved = (
                f"the demo posted {self.txs_posted} cheap txs (one block each) to move best from "
                f"{self.best_before} to {self.best_after}; "
                if self.txs_posted
                else ""
            )
            return (
                "thor solo finalizes by epochs (finalized = the checkpoint two 180-block epochs "
                f"behind best): {moved}finalized is block {self.finalized}, at or past every "
                f"anchor (newest in block {self.target_block})"
            )
        return (
            f"included, not final (solo never finalized: after {self.txs_posted} more blocks, "
            f"best {self.best_after}, /blocks/finalized is still block {self.finalized}, below "
            f"the anchor in block {self.target_block})"
        )


def drive_to_finality(url: str, target_block: int, max_blocks: int = MAX_DRIVE_BLOCKS) -> Drive:
    """Post cheap txs, one block each, until the node's finalized block reaches
    ``target_block`` or ``max_blocks`` were added."""
    key = bytes.fromhex(DRIVER_DEV_KEY)
    to = bytes.fromhex(thor.SecretKey(key).address_hex[2:])
    with ThorClient(url, retries=2) as client:
        tag = client.chain_tag()
        best = client.best_block()
        before = best.number
        finalized = client.finalized_block().number
        posted = 0
        while finalized < target_block and posted < max_blocks:
            if posted % 100 == 0:
                best = client.best_block()  # a fresh blockRef now and then
            clause = thor.Clause(to, 0, b"")
            tx = thor.sign_transaction(
                thor.Transaction(
                    chain_tag=tag,
                    block_ref=best.block_ref,
                    expiration=720,
                    clauses=(clause,),
                    gas=thor.intrinsic_gas([clause]),
                    nonce=secrets.randbits(64),
                ),
                key,
            )
            client.send_raw(tx.encode())
            posted += 1
            finalized = client.finalized_block().number
        after = client.best_block().number
    return Drive(finalized >= target_block, target_block, posted, before, after, finalized)
