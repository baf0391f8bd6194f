"""One chain protocol for the writer and the reader side (anchor/chain.py, anchor/chain_reader.py),
on a real thor solo node and a real anvil dev chain: a collector that anchored on Thor and then
moved to an EVM chain sees both chains' anchors as one kind of row, each read back through the
ChainReader with its record, block and finality, and a node that cannot be asked or serves
another network fails the same way on both chains."""

from __future__ import annotations

import os
import time
from contextlib import closing
from pathlib import Path

import pytest

from anchor.chain import (
    AnchorReadError,
    AnchorRow,
    AnchorSetupError,
    AnchorState,
    ChainAnchorer,
    ChainMismatchError,
    ChainNodeUnavailable,
    anchor_rows,
    make_anchorer,
    open_ledgers,
)
from anchor.chain_reader import make_reader
from anchor.devchain import DevChain
from anchor.evidence import EvidenceLog
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.anchor_record import AnchorRecord
from tests.support.thor_solo import DEV_KEYS, start_solo

pytestmark = pytest.mark.integration

UNREACHABLE = "http://127.0.0.1:9"


def _config(tmp_path: Path, key_hex: str, anchor_toml: str) -> CollectorConfig:
    key = tmp_path / "anchor.key"
    key.write_text(key_hex + "\n")
    key.chmod(0o600)
    path = tmp_path / "collector.toml"
    path.write_text(
        f'collector_id = "c1"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[anchor]\nkey_file = "{key}"\ninterval_s = 0.1\n{anchor_toml}'
    )
    return load_collector_config(path)


def _grow(config: CollectorConfig, entries: int) -> tuple[int, bytes]:
    """Append entries and sign a checkpoint, as the collector does: (size, root)."""
    db = open_db(config.db_path)
    try:
        log = EvidenceLog.open(db, config.log_origin, config.log_key_file)
        with db:
            log.append([os.urandom(40) for _ in range(entries)])
        cp = log.checkpoint()
        assert cp is not None
        return cp.checkpoint.size, cp.checkpoint.root_hash
    finally:
        db.close()


def _step_until(config: CollectorConfig, anchorer: ChainAnchorer, size: int,
                state: AnchorState, timeout: float = 60.0) -> AnchorRow:
    deadline = time.monotonic() + timeout
    while True:
        report = anchorer.step()
        assert report.node_ok, report.problems
        rows = [r for r in anchor_rows(config) if r.chain == anchorer.chain]
        if rows and rows[-1].tree_size == size and rows[-1].state is state:
            return rows[-1]
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_thor_then_evm_through_one_protocol(tmp_path: Path) -> None:
    thor_cfg = _config(tmp_path, DEV_KEYS[1].hex(), "")
    node = start_solo(tmp_path / "thor")
    try:
        thor_cfg = thor_cfg.model_copy(update={"anchor": thor_cfg.anchor.model_copy(
            update={"chain": "thor", "url": node.url})})
        size1, root1 = _grow(thor_cfg, 5)
        db = open_db(thor_cfg.db_path)
        source = EvidenceLog.open(db, thor_cfg.log_origin, None)
        with closing(make_anchorer(thor_cfg, source)) as anchorer:
            assert anchorer.chain == "thor"
            row = _step_until(thor_cfg, anchorer, size1, AnchorState.INCLUDED)
        db.close()
        assert row.network == node.genesis().id and row.origin == thor_cfg.log_origin
        assert row.detail is not None and "not final yet" in row.detail
        assert row.tx_id is not None

        reader = make_reader("thor", node.url, network=row.network)
        got = reader.read_anchor(row.tx_id)
        reader.close()
        assert got.record == AnchorRecord.for_checkpoint(thor_cfg.log_origin, size1, root1)
        assert (got.chain, got.network, got.block_number) == ("thor", row.network,
                                                              row.block_number)
        assert got.finalized is False  # thor solo finalizes 360+ blocks later

        with pytest.raises(AnchorReadError, match="genesis"):
            make_reader("thor", node.url, network="0x" + "00" * 32).read_anchor(row.tx_id)
    finally:
        node.stop()

    with DevChain(tmp_path / "anvil", block_time=0.5) as chain:
        evm_cfg = thor_cfg.model_copy(update={"anchor": thor_cfg.anchor.model_copy(update={
            "chain": "evm", "url": chain.url, "chain_id": chain.chain_id})})
        (tmp_path / "anchor.key").write_text(chain.private_keys[0].removeprefix("0x") + "\n")
        size2, root2 = _grow(evm_cfg, 3)
        db = open_db(evm_cfg.db_path)
        source = EvidenceLog.open(db, evm_cfg.log_origin, None)
        with closing(make_anchorer(evm_cfg, source)) as anchorer:
            assert anchorer.chain == "evm"
            evm_row = _step_until(evm_cfg, anchorer, size2, AnchorState.FINALIZED)
        db.close()
        assert evm_row.ref is not None and evm_row.ref.network == str(chain.chain_id)
        assert evm_row.tx_id is not None

        reader = make_reader("evm", chain.url, network=str(chain.chain_id))
        got = reader.read_anchor(evm_row.tx_id)
        assert got.record == AnchorRecord.for_checkpoint(evm_cfg.log_origin, size2, root2)
        assert got.finalized and got.block_number == evm_row.block_number
        with pytest.raises(ChainMismatchError):
            make_reader("evm", chain.url, network=str(chain.chain_id + 1)).read_anchor(
                evm_row.tx_id)

        # the Thor store is still read beside the EVM one: one row type, both chains
        rows = anchor_rows(evm_cfg)
        assert [(r.chain, r.tree_size) for r in rows] == [("thor", size1), ("evm", size2)]
        assert {type(r) for r in rows} == {AnchorRow}
        assert [ledger.chain for ledger in open_ledgers(evm_cfg)] == ["thor", "evm"]


@pytest.mark.parametrize("chain", ["thor", "evm"])
def test_a_node_that_cannot_be_asked_is_the_same_error_on_every_chain(chain: str) -> None:
    reader = make_reader(chain, UNREACHABLE)
    with pytest.raises(ChainNodeUnavailable):
        reader.read_anchor("0x" + "11" * 32)


def test_the_factory_says_what_to_set(tmp_path: Path) -> None:
    cfg = _config(tmp_path, DEV_KEYS[1].hex(), "")
    db = open_db(cfg.db_path)
    source = EvidenceLog.open(db, cfg.log_origin, None)
    try:
        with pytest.raises(AnchorSetupError, match="chain is \"none\""):
            make_anchorer(cfg, source)
        evm = cfg.model_copy(update={"anchor": cfg.anchor.model_copy(
            update={"chain": "evm", "url": UNREACHABLE})})
        with pytest.raises(AnchorSetupError, match="chain_id is required"):
            make_anchorer(evm, source)
    finally:
        db.close()
