"""Access tokens of the inspector API: what the operator's ``api-token`` commands write and
show (collector/api_cli.py) and how the token file is checked (collector/api_tokens.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.api_cli import api_token_group
from collector.api_tokens import TokenFile, TokenStoreError


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


def _run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(api_token_group, [args[0], "--config", str(config), *args[1:]])
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_token_once_and_keeps_only_its_hash(config: Path,
                                                              tmp_path: Path) -> None:
    code, out, err = _run(config, "create", "--farm", "farm-a", "--label", "inspector Ana")
    assert code == 0, err
    token = out.strip()
    assert out == token + "\n"  # stdout is the token alone: T=$(… create …)
    prefix, token_id, secret = token.split(".")
    assert prefix == "fpa1" and f"token {token_id} for farm farm-a" in err
    assert token not in err
    path = tmp_path / "data" / "api-tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert secret not in text and token not in text
    [entry] = json.loads(text)["tokens"]
    assert entry["id"] == token_id and entry["farm"] == "farm-a"
    assert TokenFile(path).check(token) is not None

    code, out, err = _run(config, "list")
    assert code == 0 and token_id in out and "farm farm-a" in out and "inspector Ana" in out
    assert secret not in out + err


def test_revoke_removes_the_token(config: Path, tmp_path: Path) -> None:
    _, out, _ = _run(config, "create", "--all-farms")
    token = out.strip()
    token_id = token.split(".")[1]
    store = TokenFile(tmp_path / "data" / "api-tokens.json")
    assert store.check(token) is not None
    code, out, _ = _run(config, "revoke", token_id)
    assert code == 0 and f"revoked token {token_id} (all farms)" in out
    assert store.check(token) is None
    code, _, err = _run(config, "revoke", token_id)
    assert code == 1 and "no token with id" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "give either --farm FARM or --all-farms"),
        (("--farm", "a", "--all-farms"), "give either --farm FARM or --all-farms"),
        (("--farm", "farm a/../b"), "farm must be 1 to 64"),
        (("--all-farms", "--days", "0"), "--days"),
        (("--all-farms", "--label", "a\nb"), "printable"),
    ],
)
def test_create_refuses_what_it_cannot_keep(config: Path, args: tuple[str, ...],
                                            says: str) -> None:
    code, out, err = _run(config, "create", *args)
    assert code != 0 and out == ""
    assert says in err


def test_check_accepts_exactly_the_token(tmp_path: Path) -> None:
    store = TokenFile(tmp_path / "t.json", clock=lambda: 1000.0)
    token, tok = store.create("farm-a", ttl_s=10)
    assert store.check(token) == tok
    _, token_id, secret = token.split(".")
    for wrong in ("", token + " ", token.upper(), f"fpa1.{token_id}.{secret[::-1]}",
                  f"fpa1.{'0' * 8}.{secret}", token[:-1], "x" * 10_000):
        assert store.check(wrong) is None, wrong
    later = TokenFile(store.path, clock=lambda: 1010.0)
    assert later.check(token) is None  # expired
    assert store.peek_id(token) == token_id and store.peek_id("nonsense") is None


def test_a_token_file_open_to_others_or_malformed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    store = TokenFile(path)
    store.create(None)
    os.chmod(path, 0o640)
    with pytest.raises(TokenStoreError, match="mode 0640"):
        TokenFile(path).load()
    with pytest.raises(TokenStoreError):  # nor does the CLI write through it
        store.create(None)
    os.chmod(path, 0o600)
    path.write_text('{"version": 1, "tokens": [{"id": "x"}]}')
    with pytest.raises(TokenStoreError, match="entry 0 is malformed"):
        TokenFile(path).load()
    path.write_text("[" * 5000)
    with pytest.raises(TokenStoreError, match="invalid JSON"):
        TokenFile(path).load()
    assert TokenFile(tmp_path / "none.json").all() == []  # no file: no tokens
