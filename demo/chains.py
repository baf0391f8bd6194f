"""The dev chains the demo anchors on, behind one shape: start a node, give the anchorer its
``[anchor]`` settings, help the chain to finality where it needs help, and check every anchor
on the node as an inspector does (through :mod:`anchor.chain_reader`, for any chain).

:func:`demo_chain` is the one place the demo chooses a chain by its name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from anchor.chain_reader import make_reader
from fieldproof.errors import ChainError, ConfigError
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.services import ManagedProcess

if TYPE_CHECKING:
    from anchor.chain import AnchorRow


@dataclass(frozen=True)
class StartedChain:
    """A dev chain node the demo started: stop it with the other services."""

    service: ManagedProcess
    url: str
    anchor_toml: str
    banner: str


@dataclass(frozen=True)
class Settled:
    """What helping the chain to finality did: ``explain()`` for the demo's notes."""

    final: bool
    text: str

    def explain(self) -> str:
        return self.text


class DemoChain(Protocol):
    #: what :meth:`settle` does, for the demo's console; None: blocks finalize by themselves
    settle_note: str | None

    def start(self, workdir: Path) -> StartedChain:
        """Start a throwaway node and write the anchoring key it funds."""
        ...

    def settle(self, url: str, target_block: int) -> Settled:
        """Move the chain until ``target_block`` is final (where ``settle_note`` is set)."""
        ...


class _Thor:
    """thor solo: finalizes by 180-block epochs, so the demo posts cheap txs until it has."""

    settle_note: str | None = "moving the solo chain to finality"

    def start(self, workdir: Path) -> StartedChain:
        from demo import thor as demo_thor

        node = demo_thor.start_node(workdir / "thor")
        key_file = demo_thor.write_anchor_key(workdir / "anchor.key")
        return StartedChain(node, node.url, demo_thor.anchor_toml(node.url, key_file),
                            f"VeChainThor solo node {node.url}, genesis {node.genesis().id}")

    def settle(self, url: str, target_block: int) -> Settled:
        from demo import thor as demo_thor

        drive = demo_thor.drive_to_finality(url, target_block)
        return Settled(drive.final, drive.explain())


class _Evm:
    """anvil: a block a second, final by the node's own ``finalized`` tag."""

    settle_note: str | None = None

    def start(self, workdir: Path) -> StartedChain:
        from anchor.devchain import DevChain

        devchain = DevChain(workdir / "devchain", block_time=1)
        devchain.start()
        key_file = workdir / "anchor.key"
        key_file.write_text(devchain.private_keys[0] + "\n")
        key_file.chmod(0o600)
        toml = (
            f'[anchor]\nchain = "evm"\nurl = "{devchain.url}"\n'
            f'chain_id = {devchain.chain_id}\nkey_file = "{key_file}"\ninterval_s = 1\n'
        )
        return StartedChain(devchain, devchain.url, toml,
                            f"EVM dev chain (anvil) {devchain.url}, chain id {devchain.chain_id}")

    def settle(self, url: str, target_block: int) -> Settled:
        return Settled(True, f"block {target_block} finalizes by itself on anvil")


_DEMO_CHAINS: dict[str, DemoChain] = {"thor": _Thor(), "evm": _Evm()}


def demo_chain(name: str) -> DemoChain:
    """The dev chain ``fieldproof demo --chain NAME`` starts."""
    try:
        return _DEMO_CHAINS[name]
    except KeyError:
        raise ConfigError(f"the demo has no dev chain {name!r}: use thor or evm") from None


def check_anchors(
    chain: str, url: str, origin: str, rows: Sequence[AnchorRow]
) -> list[str]:
    """Every anchor checked on the node the way an inspector checks it (its tx read back, the
    record matched, the block on the main chain and final). Problems, or []."""
    problems = []
    for r in rows:
        if r.tx_id is None:
            problems.append(f"anchor of size {r.tree_size} has no transaction ({r.state})")
            continue
        reader = make_reader(chain, url, network=None if r.ref is None else r.ref.network)
        try:
            got = reader.read_anchor(r.tx_id)
        except ChainError as exc:
            problems.append(f"anchor of size {r.tree_size}: {exc}")
            continue
        finally:
            reader.close()
        want = AnchorRecord.for_checkpoint(origin, r.tree_size, bytes.fromhex(r.root_hash))
        if got.record != want:
            problems.append(f"anchor of size {r.tree_size}: tx {r.tx_id} carries another record")
        elif not got.finalized:
            problems.append(
                f"anchor of size {r.tree_size}: block {got.block_number} is not final on {url}"
            )
    return problems
