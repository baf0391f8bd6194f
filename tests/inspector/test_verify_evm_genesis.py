"""EVM anchors name their chain's genesis block; the verifier compares it with what every node
reports for block 0 (eth_getBlockByNumber("0x0")), as it does for Thor's genesis id. A chain id
alone does not tell a network from a copy that reuses it.

Runs against a real EVM dev chain (anvil, anchor/devchain.py); a lying node is a proxy in front
of it that rewrites one JSON-RPC answer (tests/test_bundle_support.LyingProxy).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anchor.devchain import DevChain
from collector.export import evm_genesis_of, export_bundle
from fieldproof.config import AnchorSettings
from fieldproof.formats.bundle import BundleError, decode_bundle, encode_bundle
from inspector.verify import VerificationResult, verify_bundle
from tests.support.anchoring import anchor_on_evm
from tests.support.bundles import Farm, LyingProxy, rewrite, rewrite_json

NOW = time.time()
T0 = NOW - 7200
OTHER = "0x" + "ab" * 32


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    with DevChain(tmp_path_factory.mktemp("chain"), automine=False, slots_in_an_epoch=1) as c:
        yield c


@pytest.fixture
def farm(tmp_path: Path, chain: DevChain) -> Iterator[Farm]:
    f = Farm(tmp_path)
    anchor_on_evm(f, chain, T0, 5)
    yield f
    f.close()


def _export(farm: Farm, **kw: Any) -> bytes:
    return export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60, **kw)


def _verify(farm: Farm, data: bytes, nodes: list[str]) -> VerificationResult:
    return verify_bundle(data, nodes=nodes, chain="evm", offline=False, log_key=farm.vkey)


def test_genesis_recorded_and_checked(farm: Farm, chain: DevChain) -> None:
    chain_id, genesis = evm_genesis_of(chain.url)
    assert chain_id == chain.chain_id and genesis == chain.rpc(
        "eth_getBlockByNumber", "0x0", False)["hash"]
    data = _export(farm, evm_genesis={chain_id: genesis})
    (anchor,) = decode_bundle(data).checkpoints[0].anchors
    assert anchor.genesis == genesis and anchor.genesis_id == genesis
    assert decode_bundle(encode_bundle(decode_bundle(data))) == decode_bundle(data)
    r = _verify(farm, data, [chain.url])
    assert r.verdict == "pass", [f.message for f in r.findings]
    assert r.checkpoints[0].anchored

    # the bundle claims another network: every node's genesis differs, both hashes named
    claimed = rewrite(data, lambda o: o["checkpoints"][0]["anchors"][0].update(genesis=OTHER))
    r = _verify(farm, claimed, [chain.url])
    assert r.codes("error") == {"anchor_invalid"}
    message = next(f.message for f in r.findings if f.code == "anchor_invalid")
    assert genesis in message and OTHER in message
    assert not r.checkpoints[0].anchored


def test_a_node_on_another_network_is_named(farm: Farm, chain: DevChain) -> None:
    """One of two nodes reports another genesis block (a node of a copy of the chain that
    reuses its chain id): the nodes disagree, and the answer names both hashes."""
    _, genesis = evm_genesis_of(chain.url)
    data = _export(farm, evm_genesis={chain.chain_id: genesis})

    def other_genesis(method: str, path: str, q: bytes, status: int, body: bytes) -> bytes:
        try:
            req = json.loads(q)
        except ValueError:
            return body
        if isinstance(req, dict) and req.get("method") == "eth_getBlockByNumber" \
                and req.get("params", [None])[0] in ("0x0", "earliest"):
            return rewrite_json(body, lambda b: {**b, "result": {**b["result"], "hash": OTHER}})
        return body

    liar = LyingProxy(chain.url, other_genesis)
    try:
        r = _verify(farm, data, [chain.url, liar.url])
    finally:
        liar.close()
    assert liar.lies > 0
    assert r.codes("error") == {"node_disagreement"}
    message = next(f.message for f in r.findings if f.code == "node_disagreement")
    assert genesis in message and OTHER in message and liar.url in message


def test_genesis_asked_of_the_configured_node_else_chain_id_only(farm: Farm,
                                                                  chain: DevChain) -> None:
    _, genesis = evm_genesis_of(chain.url)
    farm.config = farm.config.model_copy(update={"anchor": AnchorSettings(
        chain="evm", url=chain.url, chain_id=chain.chain_id)})
    data = _export(farm)
    assert decode_bundle(data).checkpoints[0].anchors[0].genesis == genesis

    # an older bundle (or a node that could not be asked): no genesis, still verifies by id
    farm.config = farm.config.model_copy(update={"anchor": AnchorSettings(
        chain="evm", url="http://127.0.0.1:9", chain_id=chain.chain_id)})
    data = _export(farm)
    b = decode_bundle(data)
    assert b.checkpoints[0].anchors[0].genesis is None
    assert any("genesis" in n for n in b.notes)
    assert _verify(farm, data, [chain.url]).verdict == "pass"


def test_malformed_genesis_is_refused(farm: Farm) -> None:
    data = _export(farm, evm_genesis={31337: "0x" + "00" * 32})
    for bad in ("0x" + "AB" * 32, "ab" * 32, 7):

        def edit(o: dict[str, Any], v: object = bad) -> None:
            o["checkpoints"][0]["anchors"][0]["genesis"] = v

        with pytest.raises(BundleError, match="genesis"):
            decode_bundle(rewrite(data, edit))
