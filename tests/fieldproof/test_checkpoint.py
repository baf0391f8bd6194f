"""Signed notes and checkpoints against Go's sumdb/note and C2SP vectors, our own signer, the
log key file, and rejection of tampered or malformed notes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchor.logkey import LogKeyError, load_or_create_log_key, log_origin
from fieldproof.formats import merkle
from fieldproof.formats.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from fieldproof.formats.note import (
    MAX_SIGNATURES,
    Ed25519Signer,
    Ed25519Verifier,
    InvalidSignatureError,
    MalformedNoteError,
    NoteError,
    UnverifiedNoteError,
    ed25519_key_id,
    generate_key,
    open_note,
    sign_note,
)

EM = "\u2014"


@pytest.fixture(scope="module")
def vecs(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (vectors_dir / "checkpoint" / "note_vectors.json").read_text()
    )
    return data


@pytest.fixture(scope="module")
def by_id(vecs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in vecs["vectors"]}


@pytest.fixture(scope="module")
def notes_dir(vectors_dir: Path) -> Path:
    return vectors_dir / "checkpoint" / "notes"


def _all_vkeys(vecs: dict[str, Any]) -> list[str]:
    keys = [v["vkey"] for v in vecs["vectors"] if v.get("vkey")]
    keys += [p["vkey"] for p in vecs["fixed_keypairs_from_transparency-dev_formats_log_note_test"]]
    return keys


# --- vectors -----------------------------------------------------------------------------------


def test_key_ids_recompute(vecs: dict[str, Any]) -> None:
    keys = _all_vkeys(vecs)
    assert len(keys) >= 8
    for vkey in keys:
        name, hex_id, b64 = vkey.split("+", 2)
        raw = base64.b64decode(b64)
        assert raw[0] == 0x01
        want = hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4].hex()
        assert hex_id == want
        assert f"{ed25519_key_id(name, raw[1:]):08x}" == hex_id
        v = Ed25519Verifier.from_vkey(vkey)
        assert v.vkey == vkey
        assert (v.name, v.key_id) == (name, int(hex_id, 16))


def test_skeys_derive_their_vkeys(vecs: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> None:
    pairs = [
        *vecs["fixed_keypairs_from_transparency-dev_formats_log_note_test"],
        by_id["golang-mod-peterneumann"],
    ]
    for pair in pairs:
        signer = Ed25519Signer.from_skey(pair["skey"])
        assert signer.verifier().vkey == pair["vkey"]
        assert signer.skey == pair["skey"]


def test_note_files_are_the_json_vectors(by_id: dict[str, dict[str, Any]], notes_dir: Path) -> None:
    files = {
        "golang-mod_peterneumann.note": "golang-mod-peterneumann",
        "golang-mod_peter_and_enoch.note": "golang-mod-enochroot",
        "sumdb_checkpoint_6476701.note": "sumdb-checkpoint-6476701",
        "c2sp_signed-note_example.note": "c2sp-signed-note-example",
        "c2sp_tlog-cosignature_example.note": "c2sp-tlog-checkpoint-example",
    }
    assert {p.name for p in notes_dir.glob("*.note")} == set(files)
    for fname, vid in files.items():
        assert (notes_dir / fname).read_bytes() == by_id[vid]["signed_note"].encode()


@pytest.mark.parametrize(
    "vid",
    [
        "golang-mod-peterneumann",
        "golang-mod-enochroot",
        "sumdb-checkpoint-6476701",
        "c2sp-signed-note-example",
    ],
)
def test_published_notes_verify(by_id: dict[str, dict[str, Any]], vid: str) -> None:
    vec = by_id[vid]
    v = Ed25519Verifier.from_vkey(vec["vkey"])
    note = open_note(vec["signed_note"].encode(), [v])
    assert note.text == vec["text"]
    assert [(s.name, s.key_id) for s in note.sigs] == [(v.name, v.key_id)]


def test_go_signer_reproduces_signature(by_id: dict[str, dict[str, Any]]) -> None:
    vec = by_id["golang-mod-peterneumann"]
    signer = Ed25519Signer.from_skey(vec["skey"])
    assert sign_note(vec["text"], [signer]) == vec["signed_note"].encode()


def test_unknown_signatures_are_kept_aside(by_id: dict[str, dict[str, Any]]) -> None:
    vec = by_id["golang-mod-enochroot"]
    msg = vec["signed_note"].encode()
    peter = Ed25519Verifier.from_vkey(by_id["golang-mod-peterneumann"]["vkey"])
    enoch = Ed25519Verifier.from_vkey(vec["vkey"])

    both = open_note(msg, [peter, enoch])
    assert [s.name for s in both.sigs] == ["PeterNeumann", "EnochRoot"]
    assert both.unverified_sigs == ()
    only_peter = open_note(msg, [peter])
    assert [s.name for s in only_peter.sigs] == ["PeterNeumann"]
    assert [(s.name, s.key_id) for s in only_peter.unverified_sigs] == [("EnochRoot", 0xAF0CFE78)]
    only_enoch = open_note(msg, [enoch])
    assert [s.name for s in only_enoch.sigs] == ["EnochRoot"]
    # Same name, different key: still unknown, ignored rather than failed.
    impostor = generate_key("PeterNeumann").verifier()
    with pytest.raises(UnverifiedNoteError) as err:
        open_note(msg, [impostor])
    assert len(err.value.note.unverified_sigs) == 2


def test_sumdb_checkpoint_opens_with_origin(by_id: dict[str, dict[str, Any]]) -> None:
    vec = by_id["sumdb-checkpoint-6476701"]
    v = Ed25519Verifier.from_vkey(vec["vkey"])
    cp = open_checkpoint(vec["signed_note"].encode(), v, origin="go.sum database tree")
    want = vec["checkpoint"]
    assert (cp.origin, cp.size) == (want["origin"], want["size"])
    assert cp.root_hash == base64.b64decode(want["root_hash_b64"])
    assert cp.body().decode() == vec["text"]
    for wrong in ("sum.golang.org", "go.sum database tree ", "example.com/log"):
        with pytest.raises(CheckpointError, match="different log"):
            open_checkpoint(vec["signed_note"].encode(), v, origin=wrong)


def test_c2sp_checkpoint_example_parses_but_is_unverifiable(
    by_id: dict[str, dict[str, Any]],
) -> None:
    vec = by_id["c2sp-tlog-checkpoint-example"]
    cp = parse_checkpoint(vec["text"])
    assert (cp.origin, cp.size) == (vec["checkpoint"]["origin"], vec["checkpoint"]["size"])
    assert base64.b64encode(cp.root_hash).decode() == vec["checkpoint"]["root_hash_b64"]
    with pytest.raises(UnverifiedNoteError) as err:
        open_checkpoint(vec["signed_note"].encode(), generate_key(cp.origin).verifier())
    unverified = err.value.note.unverified_sigs
    assert [(s.name, f"{s.key_id:08x}") for s in unverified] == [
        ("example.com/behind-the-sofa", "033de0ae"),
        ("witness.example.com/w1", "8d66cf3f"),
    ]
    assert len(base64.b64decode(unverified[1].base64)) == 4 + 8 + 64  # cosignature v1 layout


def test_unsigned_tree_vector(by_id: dict[str, dict[str, Any]], notes_dir: Path) -> None:
    vec = by_id["golang-mod-tlog-tree-unsigned"]
    text = (notes_dir / "golang-mod_tlog_tree_unsigned.txt").read_text()
    assert text == vec["text"]
    cp = parse_checkpoint(text)
    assert cp == Checkpoint("go.sum database tree", 123456789012, merkle.leaf_hash(b"hello world"))
    assert cp.body().decode() == text


# --- our signer --------------------------------------------------------------------------------


def test_our_checkpoint_round_trips_and_go_key_format(vecs: dict[str, Any]) -> None:
    signer = generate_key("fieldproof.example/log/collector-1")
    root = merkle.root_from_leaves([b"a", b"b", b"c"])
    cp = Checkpoint(signer.name, 3, root)
    note = sign_checkpoint(cp, signer)
    assert note.startswith(cp.body() + b"\n" + f"{EM} {signer.name} ".encode())
    assert open_checkpoint(note, signer.verifier(), origin=signer.name) == cp
    # Reloaded from its key strings, it is the same key.
    again = Ed25519Signer.from_skey(signer.skey)
    assert again.key_id == signer.key_id
    assert open_checkpoint(note, Ed25519Verifier.from_vkey(signer.verifier().vkey)) == cp
    # A Go-generated key signs checkpoints we (and Go) can check.
    pair = vecs["fixed_keypairs_from_transparency-dev_formats_log_note_test"][0]
    go_signer = Ed25519Signer.from_skey(pair["skey"])
    ext = Checkpoint("Log", 0, merkle.EMPTY_ROOT, ("extension line",))
    assert (
        open_checkpoint(sign_checkpoint(ext, go_signer), Ed25519Verifier.from_vkey(pair["vkey"]))
        == ext
    )


def test_multiple_signers_and_sixteen_signatures() -> None:
    signers = [generate_key(f"witness.example/{k}") for k in range(16)]
    note = sign_note("hello\n", signers)
    opened = open_note(note, [s.verifier() for s in signers])
    assert len(opened.sigs) == 16
    assert len(open_note(note, [signers[7].verifier()]).unverified_sigs) == 15


def test_reprs_do_not_leak_private_key() -> None:
    signer = generate_key("example.com/log")
    secret = signer.skey.split("+", 4)[4]
    assert secret not in repr(signer)
    assert secret not in str(signer)
    with pytest.raises(MalformedNoteError) as err:
        Ed25519Signer.from_skey(signer.skey + "+extra")
    assert secret not in str(err.value)


# --- tampering and malformed input -------------------------------------------------------------


@pytest.fixture
def signed() -> tuple[bytes, Ed25519Verifier]:
    signer = generate_key("example.com/log")
    cp = Checkpoint("example.com/log", 12345, merkle.root_from_leaves([b"x"] * 5))
    return sign_checkpoint(cp, signer), signer.verifier()


def test_every_text_byte_change_is_rejected(signed: tuple[bytes, Ed25519Verifier]) -> None:
    note, v = signed
    text_len = note.index(b"\n\n") + 1
    for pos in range(text_len - 1):  # the last byte is the newline the format needs
        ch = note[pos : pos + 1]
        repl = b"Z" if ch != b"Z" else b"Y"
        bad = note[:pos] + repl + note[pos + 1 :]
        with pytest.raises(NoteError):
            open_checkpoint(bad, v)


def test_every_signature_byte_change_is_rejected(signed: tuple[bytes, Ed25519Verifier]) -> None:
    note, v = signed
    head, line = note.rsplit(f"{EM} ".encode(), 1)
    name, b64 = line.decode().rstrip("\n").split(" ")
    raw = base64.b64decode(b64)
    for pos in range(4, len(raw)):
        flipped = raw[:pos] + bytes([raw[pos] ^ 0x80]) + raw[pos + 1 :]
        bad = head + f"{EM} {name} {base64.b64encode(flipped).decode()}\n".encode()
        with pytest.raises(InvalidSignatureError):
            open_note(bad, [v])
    for pos in range(4):  # a changed key ID makes it someone else's signature
        flipped = raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1 :]
        bad = head + f"{EM} {name} {base64.b64encode(flipped).decode()}\n".encode()
        with pytest.raises(UnverifiedNoteError):
            open_note(bad, [v])
    truncated = head + f"{EM} {name} {base64.b64encode(raw[:-1]).decode()}\n".encode()
    with pytest.raises(InvalidSignatureError):
        open_note(truncated, [v])


def test_known_signature_failing_rejects_even_with_another_good_one() -> None:
    a, b = generate_key("a.example"), generate_key("b.example")
    note = sign_note("text\n", [a, b])
    forged_b = sign_note("other\n", [b]).split(b"\n\n")[1]
    bad = (
        note.split(b"\n\n")[0] + b"\n\n" + note.split(b"\n\n")[1].split(b"\n")[0] + b"\n" + forged_b
    )
    assert open_note(bad, [a.verifier()]).text == "text\n"
    with pytest.raises(InvalidSignatureError, match=r"b\.example"):
        open_note(bad, [a.verifier(), b.verifier()])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda n: n.replace(b"\n\n", b"\n"), "blank line"),
        (lambda n: n[:-1], "end with signature lines"),
        (lambda n: n + b"\n", "end with signature lines"),
        (lambda n: n.replace(b"\n", b"\r\n"), "control character"),
        (lambda n: n.replace(b"example.com/log\n", b"example.com/log\t\n", 1), "control character"),
        (lambda n: n.replace("\u2014".encode(), b"-"), "em dash"),
        (lambda n: n.replace(b"example.com/log ", b"example.com/log  "), "key name|base64"),
        (lambda n: n.replace(b"=\n", b"\n"), "base64"),
        (lambda n: n[:-2] + b"\xff\n", "UTF-8"),
        (lambda n: b"\xef\xbb\xbf" + n, "not signed|does not verify"),
        (lambda n: n.replace(b"example.com/log ", b"example.com/l+g "), "key name"),
    ],
)
def test_malformed_notes(signed: tuple[bytes, Ed25519Verifier], mutate: Any, match: str) -> None:
    note, v = signed
    with pytest.raises(NoteError, match=match):
        open_note(mutate(note), [v])


def test_signature_limits() -> None:
    s = generate_key("example.com/log")
    many = sign_note("t\n", [s])
    extra = "".join(f"{EM} other{k}.example AAAAAAA=\n" for k in range(MAX_SIGNATURES)).encode()
    with pytest.raises(MalformedNoteError, match="signatures"):
        open_note(many + extra, [s.verifier()])
    assert (
        len(open_note(many + extra[: extra.index(b"other15.") - 4], [s.verifier()]).unverified_sigs)
        == 15
    )
    with pytest.raises(MalformedNoteError, match="over"):
        open_note(b"x" * (1 << 20) + b"\n\n" + many.split(b"\n\n")[1], [s.verifier()])


def test_sign_note_refuses_bad_text() -> None:
    s = generate_key("example.com/log")
    for bad in ("no newline", "", "tab\there\n", "cr\r\n"):
        with pytest.raises(MalformedNoteError):
            sign_note(bad, [s])
    with pytest.raises(MalformedNoteError, match="key name"):
        generate_key("has space")
    with pytest.raises(MalformedNoteError, match="key name"):
        generate_key("a+b")


def test_bad_key_strings() -> None:
    # a key id with a hex letter in it, so the upper-cased id below really differs
    # (an all-digit id came up in CI: 1 key in ~40)
    good = generate_key("example.com/k").verifier().vkey
    while not any(c in "abcdef" for c in good.split("+")[1]):
        good = generate_key("example.com/k").verifier().vkey
    name, hex_id, b64 = good.split("+", 2)
    other_id = f"{(int(hex_id, 16) ^ 1):08x}"
    for bad in (
        f"{name}+{other_id}+{b64}",
        f"{name}+{hex_id.upper()}+{b64}",
        f"{name}+{hex_id}+{b64[:-4]}",
        f"{name}+{hex_id}",
        f"{name}+{hex_id}+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
        "",
    ):
        with pytest.raises(MalformedNoteError):
            Ed25519Verifier.from_vkey(bad)
    with pytest.raises(MalformedNoteError, match="PRIVATE"):
        Ed25519Signer.from_skey(good)


@pytest.mark.parametrize(
    "body",
    [
        "o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n+1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n\u0663\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n18446744073709551616\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n1 \n" + base64.b64encode(bytes(32)).decode() + "\n",
        "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode().rstrip("=") + "\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode()[:-2] + "B=\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode(),
        "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
        "o\n1\n",
        "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(body)


def test_checkpoint_field_validation() -> None:
    with pytest.raises(CheckpointError):
        Checkpoint("", 1, bytes(32))
    with pytest.raises(CheckpointError):
        Checkpoint("a\nb", 1, bytes(32))
    with pytest.raises(CheckpointError):
        Checkpoint("o", -1, bytes(32))
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, bytes(31))
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, bytes(32), ("",))
    assert parse_checkpoint(Checkpoint("o", 2**64 - 1, bytes(32)).body()).size == 2**64 - 1


origins = st.text(
    st.characters(min_codepoint=0x20, blacklist_characters="\x7f", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(origin=origins, size=st.integers(0, 2**64 - 1), root=st.binary(min_size=32, max_size=32))
def test_checkpoint_body_round_trip(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin, size, root)
    assert parse_checkpoint(cp.body()) == cp


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_hostile_bytes_raise_only_value_errors(data: bytes) -> None:
    v = generate_key("example.com/log").verifier()
    with pytest.raises(NoteError):
        open_note(data, [v])
    try:
        parse_checkpoint(data)
    except CheckpointError:
        pass
    else:  # only a well-formed body parses, and it re-encodes to the same bytes
        assert parse_checkpoint(data).body() == data


# --- log key file ------------------------------------------------------------------------------


def test_log_key_created_0600_and_reloaded(tmp_path: Path) -> None:
    origin = log_origin("fieldproof.example", "collector-1")
    assert origin == "fieldproof.example/log/collector-1"
    path = tmp_path / "keys" / "log.key"
    first = load_or_create_log_key(path, origin)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(f"PRIVATE+KEY+{origin}+")
    second = load_or_create_log_key(path, origin)
    assert second.verifier().vkey == first.verifier().vkey
    cp = Checkpoint(origin, 0, merkle.EMPTY_ROOT)
    assert open_checkpoint(sign_checkpoint(cp, second), first.verifier(), origin=origin) == cp
    assert [p.name for p in path.parent.iterdir()] == ["log.key"]  # no temp files left behind


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_log_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "log.key"
    load_or_create_log_key(path, "example.com/log")
    os.chmod(path, mode)
    with pytest.raises(LogKeyError, match=f"chmod 600 {path}"):
        load_or_create_log_key(path, "example.com/log")


def test_log_key_origin_mismatch_and_damage(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    signer = load_or_create_log_key(path, "example.com/log/a")
    with pytest.raises(LogKeyError, match="configured origin"):
        load_or_create_log_key(path, "example.com/log/b")
    path.write_text(signer.skey[:-6] + "\n")
    with pytest.raises(LogKeyError, match="not a valid key") as err:
        load_or_create_log_key(path, "example.com/log/a")
    assert signer.skey.split("+", 4)[4][:20] not in str(err.value)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(LogKeyError, match="cannot open"):
        load_or_create_log_key(link, "example.com/log/a")
    with pytest.raises(LogKeyError, match="key name"):
        log_origin("fieldproof.example", "bad id")


# --- the worked example in docs/evidence-log.md stays true -------------------------------------


def test_documented_example_verifies() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "evidence-log.md").read_text()
    vkey = doc.split("vkey: ", 1)[1].split("\n", 1)[0]
    start = doc.index("```\nfieldproof.example/log/collector-1\n") + 4
    note = doc[start : doc.index("```", start)].encode()
    entries = [b"entry-%d" % i for i in range(7)]
    cp = open_checkpoint(
        note, Ed25519Verifier.from_vkey(vkey), origin="fieldproof.example/log/collector-1"
    )
    assert cp.size == len(entries)
    assert cp.root_hash == merkle.root_from_leaves(entries)
    example = doc.split("### Worked example", 1)[1].split("## 3.", 1)[0]
    incl_block = example.split("inclusion proof, leaf 3 in size 7", 1)[1].split(
        "consistency proof", 1
    )[0]
    incl = [bytes.fromhex(h) for h in incl_block.split("\n")[1:] if h.strip()]
    assert len(incl) == 3
    merkle.verify_inclusion(merkle.leaf_hash(entries[3]), 3, 7, incl, cp.root_hash)
    cons_block = example.split("consistency proof, size 4 → 7", 1)[1].split("```", 1)[0]
    cons = [bytes.fromhex(h) for h in cons_block.split("\n")[1:] if h.strip()]
    merkle.verify_consistency(4, 7, cons, merkle.root_from_leaves(entries[:4]), cp.root_hash)
    checked = 0
    for line in example.splitlines():
        if line.startswith(("leaf hash 3", "root(4)", "root(7)")):
            checked += 1
            label, value = line.rsplit(" ", 1)
            want = {
                "leaf hash 3": merkle.leaf_hash(entries[3]),
                "root(4)": merkle.root_from_leaves(entries[:4]),
                "root(7)": cp.root_hash,
            }[label.strip()]
            assert bytes.fromhex(value) == want
    assert checked == 3
