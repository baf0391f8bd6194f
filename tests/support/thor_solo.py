"""The real VeChainThor node as a test rig: start thor solo, fund keys, drive blocks to finality.

``fieldproof.services.ThorSolo`` (thor v2.4.4 ``solo --on-demand``, built by scripts/peers) on a
free loopback port with its own temporary work directory, so modules running side by side
(pytest-xdist) each get their own chain. A missing binary or a node that does not come up
fails the test, never skips it: scripts/test builds the peers.

What the rig relies on, from thor's source (``cmd/thor/solo``, ``bft/engine.go``) and measured:
on demand, every posted tx that can execute is packed into a block of its own before the
``POST /transactions`` answer; ``/blocks/finalized`` is genesis until best reaches 360, then
``floor(best/180)*180 - 360``, so block b is final once best reaches
``ceil(b/180)*180 + 360``. ``finalize()`` posts exactly the cheap txs that take best there.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_hash.auto import keccak

from anchor import thor
from anchor.thor_client import ThorClient
from anchor.thor_reader import EPOCH_LENGTH
from fieldproof.services import PeerMissing, ServiceError, ThorSolo
from tests.support.bundles import THOR_KEY

# The funded dev accounts of thor solo's devnet: genesis/devnet.go DevAccounts() privKeys in
# github.com/vechain/thor/v2@v2.4.4. Public test keys; they only work on a throwaway chain.
# [0] packs solo's blocks; tests use the others, one role each, so tests sharing a node do not
# spend each other's energy.
DEV_KEYS = [
    bytes.fromhex(h)
    for h in (
        "99f0500549792796c14fed62011a51081dc5b5e68fe8bd8a13b86be829c4fd36",
        "7b067f53d350f1cf20ec13df416b7b73e88a1dc7331bc904b92108b1e76a08b1",
        "f4a1a17039216f535d42ec23732c79943ffb45a089fbb78a14daad0dae93e991",
        "35b5cc144faca7d7f220fca7ad3420090861d5231d80eb23e1013426847371c4",
        "10c851d8d6c6ed9e6f625742063f292f4cf57c2dbeea8099fa3aca53ef90aef1",
        "2dd2c5b5d65913214783a6bd5679d8c6ef29ca9f2e2eae98b4add061d0b85ea0",
        "e1b72a1761ae189c10ec3783dd124b902ffd8c6b93cd9ff443d5490ce70047ff",
        "35cbc5ac0c3a2de0eb4f230ced958fd6a6c19ed36b5d2b1803a9f11978f96072",
    )
]
DRIVER_KEY = DEV_KEYS[5]  # posts the cheap txs that move the chain
FUNDER_KEY = DEV_KEYS[7]  # sends VTHO, deploys contracts, burns gas

ENERGY_CONTRACT = b"Energy".rjust(20, b"\0")  # VTHO, a built-in contract
STORE_RUNTIME = bytes.fromhex("3660005500")  # SSTORE(0, CALLDATASIZE): ~20,000 gas per call
REVERT_RUNTIME = bytes.fromhex("60006000fd")  # REVERT(0, 0)


def start_solo(workdir: Path, *extra: str) -> ThorSolo:
    """A started thor solo node in ``workdir``; fails the test (never skips) if it cannot run."""
    try:
        node = ThorSolo(workdir, extra_args=extra)
    except PeerMissing as e:
        missing = str(e)
    else:
        try:
            node.start()
        except ServiceError as e:
            failed = str(e)
        else:
            return node
        pytest.fail(failed, pytrace=False)
    pytest.fail(missing, pytrace=False)


def expected_final_at(block: int) -> int:
    """The best block at which solo's finalized block reaches ``block``."""
    return math.ceil(block / EPOCH_LENGTH) * EPOCH_LENGTH + 2 * EPOCH_LENGTH


def signed(client: ThorClient, key: bytes, **fields: Any) -> thor.Transaction:
    """A cheap legacy tx (0 VET to itself), with ``fields`` overriding the defaults."""
    me = thor.address_of(key)
    clauses = fields.pop("clauses", (thor.Clause(me, 0, b""),))
    body: dict[str, Any] = {
        "chain_tag": client.chain_tag(),
        "block_ref": client.best_block().block_ref,
        "expiration": 720,
        "clauses": clauses,
        "gas": thor.intrinsic_gas(clauses),
        "nonce": secrets.randbits(64),
    }
    body.update(fields)
    sponsor = body.pop("sponsor", None)
    return thor.sign_transaction(thor.Transaction(**body), key, sponsor)


def dynamic(client: ThorClient) -> dict[str, Any]:
    """Fee fields of a 0x51 tx that pays whatever the base fee is now, four times over."""
    base = client.next_base_fee() or 10**13
    return {
        "tx_type": thor.TYPE_DYNAMIC_FEE,
        "max_fee_per_gas": 4 * base,
        "max_priority_fee_per_gas": 0,
    }


def drive_to(client: ThorClient, best: int) -> int:
    """Post cheap txs (one block each, on demand) until the best block is ``best``; returns
    how many were posted."""
    posted = 0
    me = thor.address_of(DRIVER_KEY)
    clauses = (thor.Clause(me, 0, b""),)
    while (head := client.best_block()).number < best:
        # Signed up front on one blockRef: reading the head before every post made driving
        # three times slower (measured: ~25 ms a block against ~8 ms).
        need = best - head.number
        body = thor.Transaction(
            chain_tag=client.chain_tag(),
            block_ref=head.block_ref,
            expiration=need + 32,
            clauses=clauses,
            gas=thor.intrinsic_gas(clauses),
            nonce=0,
        )
        for _ in range(need):
            tx = replace(body, nonce=secrets.randbits(64))
            client.send_raw(thor.sign_transaction(tx, DRIVER_KEY).encode())
            posted += 1
    return posted


def finalize(client: ThorClient) -> int:
    """Drive the chain until everything in a block now is final (no-op if it already is);
    returns how many blocks were driven."""
    return drive_to(client, expected_final_at(client.best_block().number))


def send_vtho(client: ThorClient, to: bytes, amount: int = 10**21) -> None:
    """Fund ``to`` with VTHO (energy) from the funder's dev account; included on return."""
    data = bytes(keccak(b"transfer(address,uint256)"))[:4] + to.rjust(32, b"\0")
    data += amount.to_bytes(32, "big")
    clause = thor.Clause(ENERGY_CONTRACT, 0, data)
    tx = signed(client, FUNDER_KEY, clauses=(clause,), gas=100_000, **dynamic(client))
    client.send_raw(tx.encode())
    receipt = client.receipt(tx.id_hex())
    assert receipt is not None and not receipt.reverted, receipt


def deploy(client: ThorClient, runtime: bytes) -> bytes:
    """Deploy ``runtime`` (≤ 255 bytes) with init code that CODECOPYs it and RETURNs it;
    returns the contract's address."""
    n = len(runtime)
    init = bytes([0x60, n, 0x60, 0x0C, 0x60, 0x00, 0x39, 0x60, n, 0x60, 0x00, 0xF3]) + runtime
    tx = signed(
        client, FUNDER_KEY, clauses=(thor.Clause(None, 0, init),), gas=200_000, **dynamic(client)
    )
    client.send_raw(tx.encode())
    r = httpx.get(f"{client.base_url}/transactions/{tx.id_hex()}/receipt", timeout=10).json()
    assert r["reverted"] is False, r
    return bytes.fromhex(r["outputs"][0]["contractAddress"][2:])


class SoloChain:
    """One started thor solo node and a client on it, for a module's tests to share; as a
    context manager it stops the node on the way out, so a fixture is one ``with``.

    ``mine`` is what the anchoring helpers in tests/support/bundles.py call between steps:
    here it drives the chain until every included tx is final."""

    def __init__(self, workdir: Path) -> None:
        self.node = start_solo(workdir)
        self.client = ThorClient(self.node.url, retries=1, sleep=lambda s: None)

    @property
    def url(self) -> str:
        return self.node.url

    def fund(self, *addresses: bytes, amount: int = 10**21) -> None:
        for a in addresses:
            send_vtho(self.client, a, amount)

    def mine(self) -> int:
        return finalize(self.client)

    def close(self) -> None:
        self.client.close()
        self.node.stop()

    def __enter__(self) -> SoloChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- fixtures, bound by name
# A test module binds the ones it uses (``chain, client = thor_solo.chain, thor_solo.client``);
# module scope is per binding module, so each module gets a chain of its own.


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoloChain]:
    """The module's node."""
    with SoloChain(tmp_path_factory.mktemp("thor")) as c:
        yield c


@pytest.fixture
def client(chain: SoloChain) -> Iterator[ThorClient]:
    """A client of the module's node that retries once, without sleeping."""
    with ThorClient(chain.url, retries=1, sleep=lambda s: None) as c:
        yield c


@pytest.fixture(scope="module", name="node")
def farm_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoloChain]:
    """The module's node for tests/support/bundles.Farm, its anchoring key THOR_KEY funded;
    bound as ``node``."""
    with SoloChain(tmp_path_factory.mktemp("thor")) as c:
        c.fund(THOR_KEY.address)
        yield c
