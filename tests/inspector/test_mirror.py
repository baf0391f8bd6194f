"""``fieldproof log mirror``: a certifier's copy follows a growing log, served by a plain web
server or as files, and refuses — keeping what it had — a log that was rewritten, cut, forked
(two trees of one size under one key), signed by another key, or whose tiles were altered."""

from __future__ import annotations

import base64
import functools
import hashlib
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from anchor.logstore import MerkleLog, open_log
from anchor.tiles import CHECKPOINT_FILE, write_tiles
from fieldproof.cli import cli
from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint
from fieldproof.formats.cosignature import (
    CosignatureVerifier,
    cosignature_key_id,
    cosigned_message,
)
from fieldproof.formats.note import Ed25519Signer, add_signature_lines, generate_key
from fieldproof.formats.tiles import tile_path
from inspector.mirror import DirectorySource, MirrorError, mirror_once, source_for

ORIGIN = "fieldproof.test/log/mirror"


class Log:
    """A collector's log and its public tiles directory."""

    def __init__(self, root: Path, signer: Ed25519Signer, salt: bytes = b"") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.log: MerkleLog = open_log(root / "log.sqlite")
        self.tiles = root / "tiles"
        self.signer = signer
        self.salt = salt

    def grow(self, to: int) -> None:
        n = self.log.size()
        self.log.append([hashlib.sha256(self.salt + i.to_bytes(4, "big")).digest()
                         for i in range(n, to)])  # fmt: skip
        note = sign_checkpoint(Checkpoint(ORIGIN, to, self.log.root(to)), self.signer)
        write_tiles(self.log, to, note, self.tiles)


@pytest.fixture
def signer() -> Ed25519Signer:
    return generate_key(ORIGIN)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain static web server (Python's own) over a directory: what any host does."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def publish(log: Log, www: Path) -> None:
    shutil.rmtree(www, ignore_errors=True)
    shutil.copytree(log.tiles, www)


def test_mirror_follows_a_growing_log_over_http(
    tmp_path: Path, signer: Ed25519Signer, served: tuple[Path, str]
) -> None:
    www, url = served
    log = Log(tmp_path / "c1", signer)
    mirror = tmp_path / "mirror"
    source = source_for(url)
    fetched = []
    for size in (3, 256, 700, 70_000):
        log.grow(size)
        publish(log, www)
        result = mirror_once(source, mirror, signer.verifier(), entries=True)
        assert (result.size, result.grew) == (size, True)
        fetched.append(result.fetched)
        assert (mirror / CHECKPOINT_FILE).read_bytes() == (log.tiles / CHECKPOINT_FILE).read_bytes()
    again = mirror_once(source, mirror, signer.verifier())
    assert (again.size, again.grew, again.fetched) == (70_000, False, 0)
    # only what was new is fetched: full tiles once, partial tiles per checkpoint
    assert fetched[1] == 3 and fetched[3] < 2 * (70_000 // 256 + 4)
    assert not (mirror / ".staging").exists()


def assert_refused(tmp_path: Path, signer: Ed25519Signer, source_root: Path, match: str) -> None:
    mirror = tmp_path / "mirror"
    before = (mirror / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(MirrorError, match=match):
        mirror_once(DirectorySource(source_root), mirror, signer.verifier())
    assert (mirror / CHECKPOINT_FILE).read_bytes() == before  # kept what it had
    assert not (mirror / ".staging").exists()


def test_a_rewritten_log_is_refused(tmp_path: Path, signer: Ed25519Signer) -> None:
    honest = Log(tmp_path / "honest", signer)
    honest.grow(300)
    mirror_once(DirectorySource(honest.tiles), tmp_path / "mirror", signer.verifier())
    # the operator rebuilds the log with other entries under the same key and origin
    rewritten = Log(tmp_path / "rewritten", signer, salt=b"other")
    rewritten.grow(500)
    assert_refused(tmp_path, signer, rewritten.tiles, "REWRITE")
    forked = Log(tmp_path / "forked", signer, salt=b"fork")
    forked.grow(300)
    assert_refused(tmp_path, signer, forked.tiles, "FORK")
    cut = Log(tmp_path / "cut", signer)
    cut.grow(200)
    assert_refused(tmp_path, signer, cut.tiles, "rewritten or cut")


def test_a_wrong_key_or_altered_tiles_are_refused(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = Log(tmp_path / "c1", signer)
    log.grow(100)
    mirror_once(DirectorySource(log.tiles), tmp_path / "mirror", signer.verifier())
    log.grow(600)
    assert_refused(tmp_path, generate_key(ORIGIN), log.tiles, "does not verify with the log key")
    tile = log.tiles / tile_path(0, 1)
    data = bytearray(tile.read_bytes())
    data[0] ^= 1
    tile.write_bytes(bytes(data))
    assert_refused(tmp_path, signer, log.tiles, "tiles")


def test_cli_exit_codes(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = Log(tmp_path / "c1", signer)
    log.grow(40)
    runner = CliRunner()
    args = ["log", "mirror", str(log.tiles), str(tmp_path / "m"), "--log-key",
            signer.verifier().vkey]  # fmt: skip
    ok = runner.invoke(cli, args)
    assert ok.exit_code == 0 and "40 entries" in ok.output, ok.output
    forked = Log(tmp_path / "forked", signer, salt=b"x")
    forked.grow(40)
    args[2] = str(forked.tiles)
    fork = runner.invoke(cli, args)
    assert fork.exit_code == 1 and "FORK" in fork.output, fork.output
    args[2] = str(tmp_path / "nowhere")
    gone = runner.invoke(cli, args)
    assert gone.exit_code == 2 and "cannot reach the log" in gone.output, gone.output


class Witness:
    """A witness key cosigning as C2SP tlog-cosignature v1 says (what litewitness signs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = Ed25519PrivateKey.generate()
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = cosignature_key_id(name, public)
        self.verifier = CosignatureVerifier(name, public)

    def cosign(self, note: bytes, timestamp: int) -> bytes:
        body = note[: note.rfind(b"\n\n") + 1]
        raw = (self.key_id.to_bytes(4, "big") + timestamp.to_bytes(8, "big")
               + self.key.sign(cosigned_message(timestamp, body)))  # fmt: skip
        return add_signature_lines(note, [f"\u2014 {self.name} {base64.b64encode(raw).decode()}"])


def republish(log: Log, note: bytes) -> None:
    (log.tiles / CHECKPOINT_FILE).write_bytes(note)


def test_cosignatures_added_later_for_the_same_size_are_kept(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    log = Log(tmp_path / "c1", signer)
    log.grow(300)
    mirror = tmp_path / "mirror"
    source = DirectorySource(log.tiles)
    first = mirror_once(source, mirror, signer.verifier())
    published = (log.tiles / CHECKPOINT_FILE).read_bytes()
    a, b = Witness("witness.test/a"), Witness("witness.test/b")
    # no witness keys: the re-published note (same body, same log signature) is taken as is
    with_a = a.cosign(published, 1_700_000_000)
    republish(log, with_a)
    again = mirror_once(source, mirror, signer.verifier())
    assert (again.size, again.grew, again.fetched, again.cosigned) == (300, False, 0, True)
    assert (mirror / CHECKPOINT_FILE).read_bytes() == with_a
    assert first.cosigned is False
    # with witness keys: the union of valid cosignatures, even when the log drops a line
    republish(log, b.cosign(published, 1_700_000_100))
    merged = mirror_once(source, mirror, signer.verifier(), witnesses=[a.verifier, b.verifier])
    assert merged.cosigned
    kept = (mirror / CHECKPOINT_FILE).read_bytes()
    assert kept == b.cosign(with_a, 1_700_000_100)
    # an invalid cosignature by a known witness is not taken over the valid one kept
    forged = bytearray(a.cosign(published, 1_700_000_200))
    forged[-10] = ord("A") if forged[-10] != ord("A") else ord("B")
    republish(log, bytes(forged))
    unchanged = mirror_once(source, mirror, signer.verifier(), witnesses=[a.verifier, b.verifier])
    assert not unchanged.cosigned and (mirror / CHECKPOINT_FILE).read_bytes() == kept


def test_a_changed_body_for_the_same_size_is_refused(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = Log(tmp_path / "c1", signer)
    log.grow(300)
    mirror_once(DirectorySource(log.tiles), tmp_path / "mirror", signer.verifier())
    # same size and root, another body (an extension line): two checkpoints for one tree
    other = Checkpoint(ORIGIN, 300, log.log.root(300), ("extra extension",))
    republish(log, Witness("witness.test/a").cosign(sign_checkpoint(other, signer), 1))
    assert_refused(tmp_path, signer, log.tiles, "FORK: the log signed two different checkpoints")


def test_a_merge_over_the_note_limits_keeps_the_kept_note(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    """A log that pads its re-published note up to the signature limit cannot make the merged
    note one the mirror could no longer open: with witness keys its padding is dropped; with
    more given witnesses' valid lines than a note may hold, the kept note stays."""
    log = Log(tmp_path / "c1", signer)
    log.grow(10)
    published = (log.tiles / CHECKPOINT_FILE).read_bytes()
    a, b = Witness("witness.test/a"), Witness("witness.test/b")
    republish(log, a.cosign(published, 1))
    mirror, source = tmp_path / "mirror", DirectorySource(log.tiles)
    mirror_once(source, mirror, signer.verifier())
    kept = (mirror / CHECKPOINT_FILE).read_bytes()
    filler = [f"\u2014 filler.test/{i} {base64.b64encode(bytes(68)).decode()}" for i in range(98)]
    republish(log, add_signature_lines(b.cosign(published, 2), filler))  # 100 lines: the limit
    result = mirror_once(source, mirror, signer.verifier(), witnesses=[a.verifier, b.verifier])
    assert (result.cosigned, result.dropped) == (True, 98)
    assert (mirror / CHECKPOINT_FILE).read_bytes() == b.cosign(kept, 2)
    # 99 witnesses each cosigned one of two notes: merged, 1 + 99 + 1 lines would be too many
    many = [Witness(f"witness.test/w{i}") for i in range(99)]
    old_note = add_signature_lines(published, [lines_of(w.cosign(published, 3))[-1]
                                               for w in many[:50]])  # fmt: skip
    (mirror / CHECKPOINT_FILE).write_bytes(old_note)
    republish(log, add_signature_lines(published, [lines_of(w.cosign(published, 3))[-1]
                                                   for w in many[50:]] + lines_of(kept)[1:]))
    keys = [w.verifier for w in many] + [a.verifier, b.verifier]
    over = mirror_once(source, mirror, signer.verifier(), witnesses=keys)
    assert not over.cosigned and (mirror / CHECKPOINT_FILE).read_bytes() == old_note
    again = mirror_once(source, mirror, signer.verifier())  # still opens
    assert again.size == 10


def lines_of(note: bytes) -> list[str]:
    return note[note.rfind(b"\n\n") + 2 : -1].decode().split("\n")


def test_cli_witness_keys_keep_only_verified_cosignatures(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    """``--witness-key``: a forged line of a known witness and an unknown witness's line are
    dropped, a valid one kept, at a new size and when the log re-publishes the same size."""
    log = Log(tmp_path / "c1", signer)
    log.grow(300)
    published = (log.tiles / CHECKPOINT_FILE).read_bytes()
    a, b, c = Witness("witness.test/a"), Witness("witness.test/b"), Witness("witness.test/c")
    other = sign_checkpoint(Checkpoint(ORIGIN, 299, log.log.root(299)), signer)
    replayed = lines_of(b.cosign(other, 5))[-1]  # b's real signature, over another tree
    note = add_signature_lines(c.cosign(a.cosign(published, 10), 11), [replayed])
    republish(log, note)
    mirror = tmp_path / "m"
    args = ["log", "mirror", str(log.tiles), str(mirror), "--log-key", signer.verifier().vkey,
            "--witness-key", a.verifier.vkey, "--witness-key", b.verifier.vkey]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "cosigned by 1 of 2 witness(es) (witness.test/a); 2 unverified line(s) dropped" \
        in first.output
    log_line = lines_of(published)
    assert lines_of((mirror / CHECKPOINT_FILE).read_bytes()) == \
        [*log_line, lines_of(note)[1]]  # the log's line, then a's
    # the log re-publishes with b's valid cosignature: merged with a's kept one, c still dropped
    republish(log, b.cosign(note, 20))
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "new cosignatures kept" in second.output, second.output
    kept = (mirror / CHECKPOINT_FILE).read_bytes()
    assert kept == b.cosign(a.cosign(published, 10), 20)
    # without keys the note is taken as published, unverified lines and all
    plain = runner.invoke(cli, args[:6])
    assert plain.exit_code == 0 and "cosigned by" not in plain.output, plain.output
    assert (mirror / CHECKPOINT_FILE).read_bytes() == b.cosign(note, 20)


def test_cli_witness_keys_from_a_policy(tmp_path: Path, signer: Ed25519Signer) -> None:
    log = Log(tmp_path / "c1", signer)
    log.grow(40)
    published = (log.tiles / CHECKPOINT_FILE).read_bytes()
    a, c = Witness("witness.test/a"), Witness("witness.test/c")
    republish(log, c.cosign(a.cosign(published, 1), 2))
    policy = tmp_path / "policy"
    policy.write_text(f"log {signer.verifier().vkey}\nwitness A {a.verifier.vkey}\nquorum A\n")
    mirror = tmp_path / "m"
    result = CliRunner().invoke(cli, [
        "log", "mirror", str(log.tiles), str(mirror), "--log-key", signer.verifier().vkey,
        "--policy", str(policy)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cosigned by 1 of 1 witness(es) (witness.test/a); 1 unverified" in result.output
    assert (mirror / CHECKPOINT_FILE).read_bytes() == a.cosign(published, 1)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--witness-key", "witness.test/a+00000000+AAAA", "is not a witness key"),
    ("--witness-key", "LOGKEY", "not an Ed25519 cosignature/v1 key"),
    ("--policy", "OTHER_LOG_POLICY", "is not a log of"),
    ("--policy", "BROKEN_POLICY", "policy line 1"),
    ("--policy", "MISSING", "cannot read"),
])  # fmt: skip
def test_cli_bad_witness_keys_name_the_option(
    tmp_path: Path, signer: Ed25519Signer, option: str, value: str, message: str
) -> None:
    log = Log(tmp_path / "c1", signer)
    log.grow(5)
    other = tmp_path / "other.policy"
    other.write_text(f"log {generate_key(ORIGIN).verifier().vkey}\nquorum none\n")
    broken = tmp_path / "broken.policy"
    broken.write_text("witness nokey\n")
    value = {"LOGKEY": signer.verifier().vkey, "OTHER_LOG_POLICY": str(other),
             "BROKEN_POLICY": str(broken), "MISSING": str(tmp_path / "none")}.get(value, value)
    mirror = tmp_path / "m"
    result = CliRunner().invoke(cli, [
        "log", "mirror", str(log.tiles), str(mirror), "--log-key", signer.verifier().vkey,
        option, value])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert option in result.output and message in result.output, result.output
    assert not (mirror / CHECKPOINT_FILE).exists()
