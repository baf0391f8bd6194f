"""`fieldproof anchor run/status` over a real collector database: on a real anvil EVM dev chain,
and, for what thor cannot be made to do (a node that lags on command), on the VeChainThor node
double. The ordinary Thor path (anchored, finalized by the real node's finality, shown) runs on
thor solo in tests/integration/test_anchoring_real.py::test_thor_anchor_service."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from anchor import thor
from anchor.devchain import DevChain
from anchor.evm_reader import read_anchor
from anchor.service import AnchorService, anchor_views
from fieldproof.cli import cli
from fieldproof.config import load_collector_config
from fieldproof.formats.anchor_record import AnchorRecord
from tests.support.anchoring import collector_config, grow_log
from tests.support.thornode import ThorNode, funded

KEY_HEX = "7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a"


def test_status_says_how_far_from_final_and_why(tmp_path: Path, shared_dir: Path) -> None:
    """Double: exact head numbers (anchor in block 1, best 2) and a node that lags by an hour
    on command, then catches up. On the real node the same view is checked in
    tests/integration/test_thor_real.py::test_finalized_through_the_nodes_own_finality."""
    address = thor.SecretKey(bytes.fromhex(KEY_HEX)).address
    with ThorNode(finality_depth=2, energy=funded(address)) as node:
        cfg_path = collector_config(tmp_path, KEY_HEX, f'chain = "thor"\nurl = "{node.url}"\n')
        grow_log(cfg_path, 4)
        service = AnchorService(load_collector_config(cfg_path))
        assert service.step()
        node.mine(2)  # the anchor is in block 1; best 2, finalized 0
        assert service.step()
        (view,) = anchor_views(load_collector_config(cfg_path))
        assert view.state == "included" and view.block_number == 1
        assert (view.blocks_behind_finalized, view.node_finalized, view.node_best) == (1, 0, 2)
        assert view.expected_final_at_best == 540  # block 1's epoch checkpoint 180 + 2 epochs
        assert view.detail is not None and "not final yet" in view.detail

        status = CliRunner().invoke(cli, ["anchor", "status", "--config", str(cfg_path)])
        assert status.exit_code == 0, status.output
        assert "best #2" in status.output and "finalized #0" in status.output
        assert "~538 blocks" in status.output and "PAUSED" not in status.output
        shown = json.loads(
            CliRunner()
            .invoke(cli, ["anchor", "status", "--config", str(cfg_path), "--json"])
            .output
        )
        assert shown[0]["blocks_behind_finalized"] == 1 and shown[0]["node_best"] == 2
        assert "not final yet" in shown[0]["detail"]

        node.lag_s = 3600  # the node's head is an hour old by its own clock (and ours)
        assert not service.step()
        status = CliRunner().invoke(cli, ["anchor", "status", "--config", str(cfg_path)])
        assert "PAUSED" in status.output and "not synced" in status.output
        node.lag_s = 0
        node.mine()
        assert service.step()
        service.close()
        (view,) = anchor_views(load_collector_config(cfg_path))
        assert view.state == "finalized" and view.detail is None


def test_evm_anchor_service_on_dev_chain(tmp_path: Path) -> None:
    with DevChain(tmp_path / "chain", block_time=0.5) as chain:
        key = chain.private_keys[0].removeprefix("0x")
        cfg_path = collector_config(
            tmp_path, key, f'chain = "evm"\nurl = "{chain.url}"\nchain_id = {chain.chain_id}\n'
        )
        size = grow_log(cfg_path, 7)
        service = AnchorService(load_collector_config(cfg_path))
        deadline = time.monotonic() + 60
        views = []
        while time.monotonic() < deadline:
            assert service.step()
            views = anchor_views(load_collector_config(cfg_path))
            if views and views[0].state == "finalized":
                break
            time.sleep(0.5)
        service.close()
        assert [(v.tree_size, v.state) for v in views] == [(size, "finalized")]
        on_chain = read_anchor(chain.url, views[0].tx_id or "", chain_id=chain.chain_id)
        cfg = load_collector_config(cfg_path)
        assert on_chain.record.tree_size == size
        assert on_chain.record == AnchorRecord.for_checkpoint(
            cfg.log_origin, size, bytes.fromhex(views[0].root_hash)
        )


def test_misconfiguration_is_explained(tmp_path: Path) -> None:
    cfg_path = collector_config(tmp_path, KEY_HEX, 'chain = "evm"\nurl = "http://127.0.0.1:9"\n')
    result = CliRunner().invoke(cli, ["anchor", "run", "--once", "--config", str(cfg_path)])
    assert result.exit_code != 0
    assert "chain_id is required" in result.output
    bad_mode = tmp_path / "anchor.key"
    bad_mode.chmod(0o644)
    cfg_path2 = collector_config(tmp_path, KEY_HEX, 'chain = "thor"\nurl = "http://127.0.0.1:9"\n')
    bad_mode.chmod(0o644)
    result = CliRunner().invoke(cli, ["anchor", "run", "--once", "--config", str(cfg_path2)])
    assert result.exit_code != 0
    assert "chmod 600" in result.output
    assert KEY_HEX not in result.output
