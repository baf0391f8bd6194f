"""The collector's API serves its log's public tiles at /tiles/ (issue 17): the checkpoint and
hash tiles to anyone (they reveal sizes and timing, not readings) with the caching headers
C2SP tlog-tiles asks for, entry bundles only to an all-farms token, only canonical tile paths,
only for the allowed Host; and a mirror can follow the log through it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from anchor.logstore import open_log
from anchor.tiles import write_tiles
from collector.api import InspectorServer
from collector.api_tokens import TokenFile, tokens_path
from fieldproof.config import CollectorConfig
from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint
from fieldproof.formats.note import Ed25519Signer, generate_key
from inspector.mirror import HttpSource, mirror_once

ORIGIN = "fieldproof.test/log/tiles-api"


@dataclass
class Served:
    url: str
    signer: Ed25519Signer
    all_farms: str
    one_farm: str
    tiles: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("collector")
    config = CollectorConfig.model_validate({"collector_id": "c1", "data_dir": str(root)})
    signer = generate_key(ORIGIN)
    log = open_log(root / "log.sqlite")
    log.append([hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(600)])
    note = sign_checkpoint(Checkpoint(ORIGIN, 600, log.root(600)), signer)
    write_tiles(log, 600, note, root / "tiles")
    tokens = TokenFile(tokens_path(config))
    everything, _ = tokens.create(None, "all")
    only_a, _ = tokens.create("farm-a", "a")
    server = InspectorServer(config, port=0).start()
    try:
        yield Served(server.url, signer, everything, only_a, root / "tiles")
    finally:
        server.close()
        log.close()


def get(s: Served, path: str, token: str | None = None, **headers: str) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{s.url}/tiles/{path}", headers=headers, timeout=30)


def test_checkpoint_and_hash_tiles_are_public_with_the_specs_caching(served: Served) -> None:
    cp = get(served, "checkpoint")
    assert cp.status_code == 200 and cp.content == (served.tiles / "checkpoint").read_bytes()
    assert cp.headers["content-type"] == "text/plain; charset=utf-8"
    assert "no-cache" in cp.headers["cache-control"]
    tile = get(served, "tile/0/001")
    assert tile.status_code == 200 and len(tile.content) == 8192
    assert tile.headers["content-type"] == "application/octet-stream"
    assert "immutable" in tile.headers["cache-control"]
    assert get(served, "tile/0/002.p/88").status_code == 200
    assert get(served, "tile/1/000.p/2").status_code == 200


def test_entry_bundles_need_an_all_farms_token(served: Served) -> None:
    assert get(served, "tile/entries/000").status_code == 401
    assert get(served, "tile/entries/000", served.one_farm).status_code == 403
    ok = get(served, "tile/entries/000", served.all_farms)
    assert ok.status_code == 200 and ok.content.startswith(b"\x00\x20")


@pytest.mark.parametrize(
    "path",
    ["../log.sqlite", "tile/0/../../log.sqlite", "tile/0/x000/001", "tile/0/1", "tile/00/000",
     "tile/0/000.p/0", "tile/0/009", "tile/entries/%2e%2e/x", "api-tokens.json"],
)  # fmt: skip
def test_only_canonical_existing_tiles_are_served(served: Served, path: str) -> None:
    assert get(served, path, served.all_farms).status_code == 404


def test_actions_and_hosts_are_refused(served: Served) -> None:
    assert httpx.post(f"{served.url}/tiles/checkpoint", timeout=30).status_code == 405
    rebound = get(served, "checkpoint", Host="attacker.example")
    assert rebound.status_code == 421


def test_a_mirror_follows_the_log_through_the_api(served: Served, tmp_path: Path) -> None:
    source = HttpSource(f"{served.url}/tiles/", token=served.all_farms)
    result = mirror_once(source, tmp_path / "m", served.signer.verifier(), entries=True)
    assert (result.size, result.fetched) == (600, 3 + 3 + 1)  # 3 hash tiles, 3 bundles, level 1
