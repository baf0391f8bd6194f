"""The project's own code against real peers: a VeChainThor node (``thor solo``) and InfluxDB 1.8.

Both are built from the Go module proxy at the versions pinned in scripts/peers, into a cache
outside the repository (scripts/test runs scripts/peers through scripts/bootstrap). A missing
binary makes these tests fail with the message of ``peer_binary`` (run scripts/peers); they
never skip. The test doubles (tests/support/thornode.py, the recorder in test_influx_v2.py) stay
only for the fault cases a real peer cannot be made to produce; thornode.py lists the tests that
still use it and why. The thor rig shared by the tests that use the real node (start, dev keys,
driving blocks to finality) is tests/support/thor_solo.py."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from anchor import thor
from anchor.anchoring import Anchorer, AnchorState, AnchorStore
from anchor.thor_client import BadTransaction, InsufficientEnergy, ThorClient, TxRejected
from collector.influx import InfluxCredentialsRefused, PointWriter, make_writer
from fieldproof.config import InfluxConfig
from fieldproof.services import (
    InfluxDB18,
    PeerMissing,
    ServiceError,
    ThorSolo,
    peer_binary,
    peer_version,
)
from tests.support.thor_solo import DEV_KEYS, start_solo

pytestmark = pytest.mark.integration

# The first of the ten funded dev accounts of thor solo (tests/support/thor_solo.py); it also
# signs thor solo's blocks. Public test key; never use it anywhere else.
DEV_KEY = DEV_KEYS[0]
DEV_ADDRESS = "0xf077b491b355e64048ce21e3a6fc4751eeea77fa"

# thor's devnet genesis (launch time 1526400000, the dev accounts): what solo is known to run.
SOLO_GENESIS_ID = "0x00000000bb55405beed90df9fea5acdb1cb7caba61b0d7513395f42efd30e558"

ORIGIN = "farm.example/fieldproof/log"
TOKEN_ENV = "FIELDPROOF_TEST_INFLUX_TOKEN"


def _start(service: InfluxDB18) -> None:
    try:
        service.start()
    except ServiceError as e:
        error = str(e)
    else:
        return
    pytest.fail(error, pytrace=False)


def _influx(workdir: Path, auth: tuple[str, str] | None = None) -> InfluxDB18:
    try:
        return InfluxDB18(workdir, auth=auth)
    except PeerMissing as e:
        missing = str(e)
    pytest.fail(missing, pytrace=False)


# ----------------------------------------------------------------------------- the cache


def test_missing_peer_names_scripts_peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDPROOF_PEERS", str(tmp_path))
    for name, service in (("thor", ThorSolo), ("influxd", InfluxDB18)):
        with pytest.raises(PeerMissing, match="Run scripts/peers") as err:
            peer_binary(name)
        assert str(tmp_path) in str(err.value) and peer_version(name) in str(err.value)
        with pytest.raises(PeerMissing, match="scripts/peers"):
            service(tmp_path / name)


@pytest.mark.parametrize(("name", "args"), [("thor", ["--version"]), ("influxd", ["version"])])
def test_built_peers_report_the_pinned_version(name: str, args: list[str]) -> None:
    try:
        binary = peer_binary(name)
    except PeerMissing as e:
        missing = str(e)
        binary = None
    if binary is None:
        pytest.fail(missing, pytrace=False)
    out = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=True)
    assert peer_version(name).removeprefix("v") in out.stdout + out.stderr


# ----------------------------------------------------------------------------- thor solo


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThorSolo]:
    n = start_solo(tmp_path_factory.mktemp("thor"))
    yield n
    n.stop()


@pytest.fixture
def client(node: ThorSolo) -> Iterator[ThorClient]:
    with ThorClient(node.url, retries=1, sleep=lambda s: None) as c:
        yield c


def test_thor_solo_answers_and_reports_its_genesis(node: ThorSolo, client: ThorClient) -> None:
    best = httpx.get(f"{node.url}/blocks/best", timeout=5).json()
    assert best["number"] >= 1  # block 1 is packed at start, before any tx of ours
    genesis = node.genesis()
    assert genesis.chain_tag == int(genesis.id[-2:], 16)
    # what the node says, read by our client, equals what ThorSolo read
    assert (client.genesis().id, client.chain_tag()) == (genesis.id, genesis.chain_tag)
    assert genesis.id == SOLO_GENESIS_ID and genesis.chain_tag == 0x58
    assert client.genesis().number == 0 and client.best_block().number >= 1


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes


class OneCheckpoint:
    def latest_checkpoint(self) -> tuple[Checkpoint, bytes]:
        return Checkpoint(ORIGIN, 7, b"\x07" * 32), b"signed note"


def test_anchor_tx_is_included_by_the_real_node(
    node: ThorSolo, client: ThorClient, tmp_path: Path
) -> None:
    key = thor.SecretKey(DEV_KEY)
    assert key.address_hex == DEV_ADDRESS
    store = AnchorStore(tmp_path / "anchors.db")
    with Anchorer(store, client, OneCheckpoint(), key) as anchorer:
        deadline = time.monotonic() + 20
        while True:
            report = anchorer.step()
            assert report.node_ok and not report.errors, report
            row = store.get(1)
            if row.state is not AnchorState.PENDING or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert row.state in (AnchorState.INCLUDED, AnchorState.FINALIZED), row
    assert row.tx_id is not None and row.genesis_id == SOLO_GENESIS_ID
    receipt = client.receipt(row.tx_id)
    assert receipt is not None and receipt.reverted is False
    assert receipt.tx_origin == receipt.gas_payer == DEV_ADDRESS
    assert receipt.tx_type == thor.TYPE_DYNAMIC_FEE and receipt.block_number == row.block_number
    # the node holds exactly the bytes we built, signed and stored
    got = client.raw_transaction(row.tx_id)
    assert got is not None
    raw, meta = got
    assert raw == store.get_tx(row.tx_id).raw
    tx = thor.decode(raw)
    assert tx.id_hex() == row.tx_id and tx.clauses[0].data == row.record
    assert meta is not None and meta.block_id == receipt.block_id
    store.close()


def _signed(client: ThorClient, key: bytes, **fields: object) -> thor.Transaction:
    clause = thor.Clause(bytes.fromhex(DEV_ADDRESS[2:]), 0, b"fieldproof test")
    body: dict[str, object] = {
        "chain_tag": client.chain_tag(),
        "block_ref": client.best_block().block_ref,
        "expiration": 720,
        "clauses": (clause,),
        "gas": thor.intrinsic_gas([clause]),
        "nonce": secrets.randbits(64),
    }
    body.update(fields)
    return thor.sign_transaction(thor.Transaction(**body), key)  # type: ignore[arg-type]


def test_real_node_answers_map_to_our_client_errors(client: ThorClient) -> None:
    tx = _signed(client, DEV_KEY)  # legacy tx, gasPriceCoef 0
    assert client.send_raw(tx.encode()) == tx.id_hex()
    with pytest.raises(TxRejected) as again:
        client.send_raw(tx.encode())
    assert again.value.known
    with pytest.raises(BadTransaction, match="chain tag mismatch"):
        client.send_raw(_signed(client, DEV_KEY, chain_tag=0x4A).encode())
    with pytest.raises(InsufficientEnergy):
        client.send_raw(_signed(client, secrets.token_bytes(32)).encode())
    with pytest.raises(TxRejected) as expired:
        client.send_raw(_signed(client, DEV_KEY, block_ref=bytes(8), expiration=1).encode())
    assert expired.value.expired


# ----------------------------------------------------------------------------- InfluxDB 1.8


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB18]:
    db = _influx(tmp_path_factory.mktemp("influx"))
    _start(db)
    db.create_database("fieldproof")
    yield db
    db.stop()


def _v2_writer(url: str, token: str, monkeypatch: pytest.MonkeyPatch, bucket: str) -> PointWriter:
    monkeypatch.setenv(TOKEN_ENV, token)
    return make_writer(InfluxConfig(api="v2", url=url, bucket=bucket, token_env=TOKEN_ENV))


def test_v2_writer_point_is_read_back_by_influxql(
    influx: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _v2_writer(influx.url, influx.token, monkeypatch, "fieldproof/autogen")
    w.write(["reading,gateway=gw-1,sensor=soil value=21.5 1700000000000000001"])
    w.close()
    series = influx.query("SELECT value FROM reading WHERE gateway = 'gw-1'")
    assert series[0]["values"] == [[1700000000000000001, 21.5]]
    # flux-enabled: the same point through Flux on the 2.x query API
    r = httpx.post(
        f"{influx.url}/api/v2/query",
        headers={"Content-Type": "application/vnd.flux", "Accept": "application/csv"},
        content=b'from(bucket: "fieldproof/autogen") |> range(start: 0)'
        b' |> filter(fn: (r) => r._measurement == "reading")',
        timeout=30,
    )
    assert r.status_code == 200 and ",21.5,value,reading," in r.text


def test_v2_writer_with_auth_refuses_a_wrong_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no space in the password: 1.8 splits "Authorization: Token user:password" on spaces
    # and refuses such a token with 401 "unable to parse authentication credentials"
    db = _influx(tmp_path, auth=("fieldproof", "s3cret:pa$$'word"))
    _start(db)
    try:
        db.create_database("fieldproof")
        wrong = _v2_writer(db.url, "fieldproof:wrong", monkeypatch, "fieldproof")
        with pytest.raises(InfluxCredentialsRefused, match="401"):
            wrong.write(["reading,gateway=gw-2 value=1 1700000000000000002"])
        wrong.close()
        right = _v2_writer(db.url, db.token, monkeypatch, "fieldproof")
        right.write(["reading,gateway=gw-2 value=2 1700000000000000003"])
        right.close()
        assert db.query("SELECT value FROM reading")[0]["values"] == [[1700000000000000003, 2]]
        r = httpx.get(f"{db.url}/query", params={"q": "SHOW DATABASES"}, timeout=10)
        assert r.status_code == 401  # and no way in without credentials
    finally:
        db.stop()
