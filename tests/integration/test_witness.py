"""Witness cosigning against a real C2SP tlog-witness: torchwood's litewitness (built by
scripts/peers at the pinned version, its key in its own ssh-agent). The collector's
``maybe_checkpoint`` hands each checkpoint to the cosigning worker's threads, which ask the
witness; the cosignature is verified with the witness's vkey and lands in the stored note and in
the public tiles' ``checkpoint``. A witness that hangs or is down delays neither a batch nor a
checkpoint, is counted, and is asked again when back; a witness that holds another tree of our
log (a split view) is reported as such.

A missing litewitness build makes these tests fail (run scripts/peers), never skip."""

from __future__ import annotations

import base64
import http.server
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.core import Metric

import collector.service
from anchor.evidence import EvidenceLog
from anchor.logkey import load_or_create_log_key
from anchor.tiles import write_tiles
from anchor.witness import (
    BAD_COSIGNATURE,
    BAD_PROOF,
    BAD_REQUEST,
    BAD_SIGNATURE,
    CONFLICT,
    FAILURES,
    MAX_RESPONSE_BYTES,
    OK,
    REFUSED,
    SERVER_ERROR,
    SIZE_CONTENT_TYPE,
    SPLIT_VIEW,
    UNKNOWN_LOG,
    UNREACHABLE,
    CosigningWorker,
    WitnessClient,
    Witnesses,
    is_size_answer,
    parse_conflict_size,
    pick_cosignature,
)
from collector.ingest import Incoming
from collector.metrics import CollectorMetrics
from collector.service import Collector
from fieldproof import wire
from fieldproof.config import CollectorConfig, LogConfig, WitnessConfig
from fieldproof.datadir import open_db
from fieldproof.formats.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from fieldproof.formats.cosignature import (
    CosignatureError,
    CosignatureVerifier,
    cosignature_key_id,
    cosigned_message,
    parse_cosignature_line,
    verify_cosignature_line,
)
from fieldproof.formats.note import (
    Ed25519Verifier,
    MalformedNoteError,
    add_signature_lines,
    generate_key,
    open_note,
)
from fieldproof.services import Litewitness, ServiceError

pytestmark = pytest.mark.integration

COLLECTOR_ID = "c-witness"
ORIGIN = f"fieldproof.example/log/{COLLECTOR_ID}"
WITNESS = "witness.fieldproof.example/w1"


class NullWriter:
    def write(self, lines: object) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def log_vkey(tmp_path: Path) -> Ed25519Verifier:
    return load_or_create_log_key(tmp_path / "data" / "log.key", ORIGIN).verifier()


@pytest.fixture
def witness(tmp_path: Path, log_vkey: Ed25519Verifier) -> Iterator[Litewitness]:
    w = Litewitness(tmp_path / "witness", witness_name=WITNESS, logs=[(ORIGIN, log_vkey.vkey)])
    try:
        w.start()
    except ServiceError as exc:
        w.close()
        pytest.fail(str(exc), pytrace=False)
    yield w
    w.close()


def witness_config(w: Litewitness) -> WitnessConfig:
    return WitnessConfig(name=WITNESS, url=w.url, vkey=w.vkey, timeout_s=5, retry_s=0)


def make_collector(data_dir: Path, witnesses: list[WitnessConfig]) -> Collector:
    cfg = CollectorConfig(
        collector_id=COLLECTOR_ID,
        data_dir=data_dir,
        log=LogConfig(checkpoint_every_entries=1, witnesses=witnesses),
    )
    return Collector(cfg, writer=NullWriter())


def shut(c: Collector) -> None:
    """What Collector.run does at the end, for a collector driven by the test."""
    c.stop_witnesses()
    c.db.close()


def settle(c: Collector) -> None:
    """Wait until every witness thread was asked about the newest checkpoint (or waits to
    retry after a failure)."""
    assert c.witness_worker.wait_idle(60), "the witnesses' threads did not settle in 60 s"


def eventually(what: str, check: Callable[[], bool]) -> None:
    """Wait (up to 60 s) for something a witness thread does on its own schedule."""
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within 60 s"
        threading.Event().wait(0.05)


def append(c: Collector, n: int, tag: str = "a") -> None:
    start = c.evidence.log.size()
    with c.db:
        c.evidence.append([f"{tag}-entry-{start + i}".encode() for i in range(n)])


def witness_sigs(note: bytes, log_v: Ed25519Verifier, w: Litewitness) -> list[str]:
    opened = open_note(note, [log_v, CosignatureVerifier.from_vkey(w.vkey)])
    return [s.name for s in opened.sigs if s.name == WITNESS]


def test_vkey_is_the_one_litewitness_announces(witness: Litewitness) -> None:
    # litewitness logs 'msg="verifier key" vkey=<vkey>' at start; ours is computed from the
    # ssh public key: they must agree, or no cosignature would ever verify
    assert f"vkey={witness.vkey}" in witness.log_path.read_text()


def test_cosigns_a_growing_log_into_note_and_tiles(
    tmp_path: Path, witness: Litewitness, log_vkey: Ed25519Verifier
) -> None:
    c = make_collector(tmp_path / "data", [witness_config(witness)])
    try:
        for grow in (1, 2, 5, 9, 300):
            append(c, grow)
            c.maybe_checkpoint(force=True)
            settle(c)
            latest = c.evidence.latest()
            assert latest is not None
            size = latest.checkpoint.size
            assert size == c.evidence.log.size()  # the checkpoint covers the whole log
            # in the stored note, verified with the witness's key
            assert witness_sigs(latest.note, log_vkey, witness) == [WITNESS]
            # ... and in the public tiles' checkpoint file, byte for byte
            published = (c.tiles_dir / "checkpoint").read_bytes()
            assert published == latest.note
            assert open_checkpoint(published, log_vkey, origin=ORIGIN) == latest.checkpoint
            # the witness stored exactly our tree (it checked each consistency proof)
            (known,) = witness.list_logs()
            assert known["size"] == size
            assert known["root_hash"] == base64.b64encode(latest.checkpoint.root_hash).decode()
            row = c.db.execute("SELECT size FROM witness_state WHERE witness=?", (WITNESS,))
            assert row.fetchone()[0] == size
            assert c.witnesses.status() == {WITNESS: OK}
        assert size >= 317
        assert c.witnesses.counters[(WITNESS, "cosigned")] == 5
        requests = c.witnesses.counters[(WITNESS, "requests")]
        # a pass with nothing new does not ask the witness again
        c.maybe_checkpoint()
        settle(c)
        assert c.witnesses.counters[(WITNESS, "cosigned")] == 5
        assert c.witnesses.counters[(WITNESS, "requests")] == requests
        # the cosignature line verifies on its own (cosignature/v1 over the note text)
        assert latest is not None
        line = latest.note.decode().rstrip("\n").split("\n")[-1]
        text = latest.note[: latest.note.rfind(b"\n\n") + 1]
        cosig = verify_cosignature_line(line, text, CosignatureVerifier.from_vkey(witness.vkey))
        assert cosig.timestamp > 1_700_000_000
        with pytest.raises(CosignatureError):
            verify_cosignature_line(
                line,
                text.replace(b"\n%d\n" % size, b"\n%d\n" % (size + 1)),
                witness_verifier(witness),
            )
    finally:
        shut(c)


def witness_verifier(w: Litewitness) -> CosignatureVerifier:
    return CosignatureVerifier.from_vkey(w.vkey)


def test_witness_down_checkpoints_go_on_and_cosigning_resumes(
    tmp_path: Path,
    witness: Litewitness,
    log_vkey: Ed25519Verifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = make_collector(tmp_path / "data", [witness_config(witness)])
    try:
        append(c, 4)
        c.maybe_checkpoint(force=True)
        settle(c)
        assert c.witnesses.status() == {WITNESS: OK}
        plain_notes = []

        witness.stop()
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            for _ in range(3):
                append(c, 3)
                c.maybe_checkpoint(force=True)  # returns: the log and its tiles go on
                settle(c)
                latest = c.evidence.latest()
                assert latest is not None
                plain_notes.append(latest.note)
                assert open_checkpoint(latest.note, log_vkey) == latest.checkpoint
                assert (c.tiles_dir / "checkpoint").read_bytes() == latest.note
                assert witness_sigs(latest.note, log_vkey, witness) == []
        down_size = c.evidence.log.size()
        assert latest is not None and latest.checkpoint.size == down_size
        assert c.witnesses.status() == {WITNESS: UNREACHABLE}
        # asked at least once while down (then less often: the retry delay grows)
        assert 1 <= c.witnesses.counters[(WITNESS, UNREACHABLE)] <= 3
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1 and down[0].levelno == logging.ERROR  # once per state change
        caplog.clear()

        witness.start()  # same port, same database (it knows size 4)
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            # nothing new in the log: the worker retries on its own
            eventually(
                "cosigned after the witness is back", lambda: c.witnesses.status()[WITNESS] == OK
            )
            settle(c)
        latest = c.evidence.latest()
        assert latest is not None and latest.checkpoint.size == down_size
        assert witness_sigs(latest.note, log_vkey, witness) == [WITNESS]
        # the same checkpoint for everyone: the note that was read before, plus one line
        assert latest.note.startswith(plain_notes[-1])
        assert latest.note.count(b"\n") == plain_notes[-1].count(b"\n") + 1
        assert (c.tiles_dir / "checkpoint").read_bytes() == latest.note  # published again
        # from the size it knew with a consistency proof
        assert witness.list_logs()[0]["size"] == down_size
        assert any("cosigns again" in r.getMessage() for r in caplog.records)
    finally:
        shut(c)


def test_stale_size_gets_409_and_is_retried_from_the_witness_size(
    tmp_path: Path, witness: Litewitness, log_vkey: Ed25519Verifier
) -> None:
    c = make_collector(tmp_path / "data", [witness_config(witness)])
    try:
        append(c, 6)
        c.maybe_checkpoint(force=True)
        settle(c)
        # forget what the witness cosigned: the next request says "old 0", the witness
        # answers 409 with 6, and the client proves 6 -> 10 instead
        with c.db:
            c.db.execute("UPDATE witness_state SET size=0")
        c.witnesses.states[0].size = 0
        append(c, 4)
        c.maybe_checkpoint(force=True)
        settle(c)
        latest = c.evidence.latest()
        assert latest is not None and latest.checkpoint.size == c.evidence.log.size()
        assert witness_sigs(latest.note, log_vkey, witness) == [WITNESS]
        assert c.witnesses.states[0].size == latest.checkpoint.size
        assert c.witnesses.counters[(WITNESS, "requests")] == 3  # 6, then 10: 409, 10 again
        assert c.witnesses.counters[(WITNESS, CONFLICT)] == 0
        # the 409 litewitness sends carries the spec's Content-Type (one without it is refused)
        client = WitnessClient(witness_config(witness))
        try:
            r = client.add_checkpoint(0, [], latest.note)
        finally:
            client.close()
        assert (r.status, r.body) == (409, b"%d\n" % latest.checkpoint.size)
        assert r.content_type == SIZE_CONTENT_TYPE
    finally:
        shut(c)


def split_log(tmp_path: Path, name: str, entries: int) -> EvidenceLog:
    """Another log under the same key and origin, with other entries: a split view."""
    d = tmp_path / name
    d.mkdir()
    key = d / "log.key"
    shutil.copy(tmp_path / "data" / "log.key", key)
    key.chmod(0o600)
    db = open_db(d / "collector.sqlite")
    ev = EvidenceLog.open(db, ORIGIN, key)
    with db:
        ev.append([f"forged-{i}".encode() for i in range(entries)])
    assert ev.checkpoint() is not None
    return ev


def test_split_view_is_refused_and_reported_loudly(
    tmp_path: Path,
    witness: Litewitness,
    log_vkey: Ed25519Verifier,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = make_collector(tmp_path / "data", [witness_config(witness)])
    try:
        append(c, 5)
        c.maybe_checkpoint(force=True)
        settle(c)
        honest = witness.list_logs()[0]
        honest_size = c.evidence.log.size()
        assert honest["size"] == honest_size
    finally:
        shut(c)

    # the forged log gets a checkpoint of its own, which may add an entry (a seal)
    for name, entries in (("same-size", 5), ("smaller", 3)):
        ev = split_log(tmp_path, name, entries)
        forged = ev.latest()
        assert forged is not None
        size = forged.checkpoint.size
        if name == "same-size":
            while size < honest_size:  # grow the forgery to the honest size
                with ev.db:
                    ev.append([b"forged-more"] * (honest_size - size))
                forged = ev.checkpoint()
                assert forged is not None
                size = forged.checkpoint.size
            assert size == honest_size
        ws = Witnesses(ev.db, ev, [witness_config(witness)])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            assert ws.cosign_latest() is False
        assert ws.status() == {WITNESS: SPLIT_VIEW}
        assert ws.counters[(WITNESS, SPLIT_VIEW)] == 1
        critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(critical) == 1 and "SPLIT VIEW" in critical[0].getMessage()
        latest = ev.latest()
        assert latest is not None and latest.checkpoint.size == size
        assert witness_sigs(latest.note, log_vkey, witness) == []
        # the witness kept the honest tree
        assert witness.list_logs()[0] == honest
        ev.db.close()
        ws.close()


def test_unknown_log_is_refused(
    tmp_path: Path, witness: Litewitness, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    db = open_db(other / "collector.sqlite")
    ev = EvidenceLog.open(db, "fieldproof.example/log/unknown", other / "log.key")
    with db:
        ev.append([b"x"])
    ev.checkpoint()
    ws = Witnesses(db, ev, [witness_config(witness)])
    with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
        assert ws.cosign_latest() is False
        assert ws.cosign_latest() is False  # retry_s=0: asked again, logged once
    # the spec says 404 for an unknown origin; litewitness answers 403 "unknown log" (the
    # 404 path is checked with a double below): either way refused, telling what to do
    assert ws.status() == {WITNESS: REFUSED}
    assert ws.counters[(WITNESS, BAD_SIGNATURE)] == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "answered 403" in errors[0], errors
    assert "register our origin and current log vkey" in errors[0]
    db.close()
    ws.close()


def test_a_checkpoint_signed_with_another_key_gets_403(
    tmp_path: Path, witness: Litewitness, caplog: pytest.LogCaptureFixture
) -> None:
    """Our origin, but a log key the witness was not given (a rotated or stolen key): 403."""
    other = tmp_path / "other"
    other.mkdir()
    db = open_db(other / "collector.sqlite")
    ev = EvidenceLog.open(db, ORIGIN, other / "log.key")  # a new key under our origin
    with db:
        ev.append([b"x"])
    ev.checkpoint()
    ws = Witnesses(db, ev, [witness_config(witness)])
    with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
        assert ws.cosign_latest() is False
    assert ws.status() == {WITNESS: REFUSED}
    assert ws.counters[(WITNESS, BAD_SIGNATURE)] == 1
    assert sum(ws.counters[(WITNESS, r)] for r in FAILURES) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "answered 403" in errors[0] and "log vkey" in errors[0]
    db.close()
    ws.close()


def test_write_tiles_publishes_a_cosigned_note_unchanged(
    tmp_path: Path, witness: Litewitness, log_vkey: Ed25519Verifier
) -> None:
    # the tiles writer takes a note with extra signature lines as it is
    c = make_collector(tmp_path / "data", [witness_config(witness)])
    try:
        append(c, 2)
        c.maybe_checkpoint(force=True)
        settle(c)
        latest = c.evidence.latest()
        assert latest is not None
        assert witness_sigs(latest.note, log_vkey, witness) == [WITNESS]
        out = tmp_path / "tiles2"
        write_tiles(c.evidence.log, latest.checkpoint.size, latest.note, out)
        assert (out / "checkpoint").read_bytes() == latest.note
    finally:
        shut(c)


class HangingWitness:
    """A TCP listener that accepts and never answers (a witness stuck behind a dead proxy)
    until ``release()`` closes the connections it holds."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def release(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()
        self.thread.join(10)


def other_witness(name: str) -> tuple[str, CosignatureVerifier]:
    v = CosignatureVerifier(name, generate_key("x").verifier().public_key)
    return v.vkey, v


class Gateway:
    """A registered gateway that signs readings as they come off the broker."""

    def __init__(self, c: Collector) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.id = wire.gateway_id_for(wire.public_key_bytes(self.key))
        c.registry.add(self.id, wire.public_key_bytes(self.key), "farm", "field")
        c.ingestor.devices.reload()

    def batch(self, first_seq: int, n: int) -> list[Incoming]:
        out = []
        for seq in range(first_seq, first_seq + n):
            reading = wire.Reading("s", "soil_moisture", "/", 0.3, time.time())
            payload = wire.Payload(self.id, seq, 1, (reading,))
            msg = wire.encode_message(payload, self.key)
            out.append(Incoming(f"fieldproof/v1/{self.id}/readings", msg))
        return out


def test_a_hanging_witness_delays_no_batch_and_no_other_witness(
    tmp_path: Path, witness: Litewitness, log_vkey: Ed25519Verifier
) -> None:
    hang = HangingWitness()
    hang_name = "witness.fieldproof.example/hangs"
    hang_vkey, _ = other_witness(hang_name)
    c = make_collector(
        tmp_path / "data",
        [
            WitnessConfig(name=hang_name, url=hang.url, vkey=hang_vkey, timeout_s=60, retry_s=0),
            witness_config(witness),
        ],
    )
    try:
        gw = Gateway(c)
        assert c.ingestor.process(gw.batch(1, 3)).accepted == 3
        c.maybe_checkpoint(force=True)
        assert hang.accepted.wait(60), "the worker never asked the hanging witness"
        # the hanging witness holds its request open (up to its 60 s timeout): a batch is
        # ingested and checkpointed meanwhile, and the other witness cosigns it
        result = c.ingestor.process(gw.batch(4, 5))
        assert result.accepted == 5
        c.maybe_checkpoint(force=True)
        latest = c.evidence.latest()
        assert latest is not None and latest.checkpoint.size == c.evidence.log.size()
        eventually(
            "the real witness's cosignature",
            lambda: witness_sigs(c.witnesses.note_of(latest.checkpoint.size) or b"", log_vkey,
                                 witness) == [WITNESS],
        )  # fmt: skip
        note = c.witnesses.note_of(latest.checkpoint.size)
        assert note is not None and note.startswith(latest.note)
        eventually("the cosigned note in the tiles",
                   lambda: (c.tiles_dir / "checkpoint").read_bytes() == note)  # fmt: skip
        # ... all while the request to the hanging witness has not ended
        (hung, _) = c.witnesses.stats()
        assert hung.name == hang_name and hung.requests == 1
        assert hung.cosignatures == 0 and sum(hung.failures.values()) == 0
        # shutdown does not wait for it: its request is abandoned, the others' threads end
        c.stop_witnesses()
        assert c.witness_worker.threads[1].is_alive() is False
        assert c.witness_worker.threads[0].is_alive() is True
    finally:
        hang.release()
        for t in c.witness_worker.threads:
            t.join(60)
        assert not c.witness_worker.alive
        # an answer (here: the connection closed) after shutdown stores nothing
        latest2 = c.evidence.latest()
        assert latest2 is not None and latest2.note == note
        shut(c)


def scrape(c: Collector) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    family: Metric
    for family in CollectorMetrics(c).witness_metrics():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_witness_counters_in_metrics(tmp_path: Path, witness: Litewitness) -> None:
    # a witness that is down: nothing listens on its port
    with socket.create_server(("127.0.0.1", 0)) as s:
        down_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    down_name = "witness.fieldproof.example/down"
    down_vkey, _ = other_witness(down_name)
    down = WitnessConfig(name=down_name, url=down_url, vkey=down_vkey, timeout_s=5, retry_s=0)
    c = make_collector(tmp_path / "data", [witness_config(witness), down])
    try:
        before = time.time()
        append(c, 3)
        c.maybe_checkpoint(force=True)
        settle(c)
        m = scrape(c)
        by_witness = {labels["witness"]: v for labels, v in m["fieldproof_witness_requests_total"]}
        assert by_witness == {WITNESS: 1, down_name: c.witnesses.counters[(down_name, "requests")]}
        assert by_witness[down_name] >= 1
        cosigned = {lb["witness"]: v for lb, v in m["fieldproof_witness_cosignatures_total"]}
        assert cosigned == {WITNESS: 1, down_name: 0}
        failures = {
            (lb["witness"], lb["reason"]): v for lb, v in m["fieldproof_witness_failures_total"]
        }
        assert failures[(down_name, UNREACHABLE)] == by_witness[down_name]
        assert failures[(WITNESS, UNREACHABLE)] == 0
        assert {k: v for k, v in failures.items() if k[1] != UNREACHABLE} == {
            (w, r): 0 for w in (WITNESS, down_name) for r in FAILURES if r != UNREACHABLE
        }
        ok = {lb["witness"]: v for lb, v in m["fieldproof_witness_ok"]}
        assert ok == {WITNESS: 1, down_name: 0}
        (last,) = m["fieldproof_witness_last_success_timestamp_seconds"]
        assert last[0] == {"witness": WITNESS} and last[1] >= before
        # and through the Prometheus text format, as a scraper reads it
        from prometheus_client import generate_latest
        from prometheus_client.registry import CollectorRegistry

        reg = CollectorRegistry(auto_describe=False)
        reg.register(CollectorMetrics(c))
        text = generate_latest(reg).decode()
        assert (
            f'fieldproof_witness_failures_total{{reason="unreachable",witness="{down_name}"}}'
            in text
        )
    finally:
        shut(c)


def test_no_witness_no_thread_no_family(tmp_path: Path) -> None:
    c = make_collector(tmp_path / "data", [])
    try:
        assert c.witness_worker.threads == [] and c.witnesses.db is c.db
        assert scrape(c) == {}
    finally:
        shut(c)


# ---------------------------------------------------------------- cosignature format (unit)


def spec_example(vectors_dir: Path) -> tuple[bytes, str, bytes]:
    """The C2SP example: the cosigned note, its witness line, and the spec's signed message."""
    note = (vectors_dir / "checkpoint/notes/c2sp_tlog-cosignature_example.note").read_bytes()
    spec = (vectors_dir / "checkpoint/c2sp/tlog-cosignature.md").read_text()
    start = spec.index("    cosignature/v1\n")
    block = []
    for line in spec[start:].split("\n"):
        if not line.startswith("    "):
            break
        block.append(line[4:])
    message = ("\n".join(block) + "\n").encode()
    line = note.decode().rstrip("\n").split("\n")[-1]
    return note, line, message


def test_cosignature_on_the_c2sp_vector(vectors_dir: Path) -> None:
    note, line, message = spec_example(vectors_dir)
    cosig = parse_cosignature_line(line)
    assert cosig.name == "witness.example.com/w1"
    assert cosig.key_id == 0x8D66CF3F
    # the timestamp in the line is the one of the spec's example signed message
    assert cosig.timestamp == 1679315147
    text = note[: note.rfind(b"\n\n") + 1]
    assert cosigned_message(cosig.timestamp, text) == message
    # C2SP publishes no key for this witness: a key of that name cannot have its key ID, and
    # with the ID forced a random key does not verify it
    random_v = CosignatureVerifier(
        "witness.example.com/w1", generate_key("x").verifier().public_key
    )
    assert random_v.key_id != cosig.key_id
    with pytest.raises(CosignatureError, match="not by the configured witness"):
        verify_cosignature_line(line, text, random_v)
    assert random_v.verify(text, cosig.timestamp.to_bytes(8, "big") + cosig.signature) is False
    # the log's own line (type 0x01, 68 bytes) is not a cosignature
    with pytest.raises(CosignatureError, match="76 bytes"):
        parse_cosignature_line(note.decode().split("\n")[4])


def test_cosignature_key_ids_and_vkeys() -> None:
    pub = bytes(range(32))
    v = CosignatureVerifier("w.example/x", pub)
    assert v.key_id == cosignature_key_id("w.example/x", pub)
    assert CosignatureVerifier.from_vkey(v.vkey).public_key == pub
    log_key = Ed25519Verifier("w.example/x", pub)
    assert log_key.key_id != v.key_id  # 0x01 vs 0x04: one key never passes for the other
    for bad in (log_key.vkey, v.vkey.replace("+", "+0", 1), "x" * 2000, "a+b"):
        with pytest.raises(CosignatureError):
            CosignatureVerifier.from_vkey(bad)


def test_add_signature_lines_keeps_note_and_replaces_same_key() -> None:
    signer = generate_key("log.example/l")
    signed = sign_checkpoint(Checkpoint("log.example/l", 1, bytes(32)), signer)
    a = "\u2014 w.example/a " + base64.b64encode(b"\0\0\0\1" + bytes(72)).decode()
    b = "\u2014 w.example/a " + base64.b64encode(b"\0\0\0\1" + b"\1" * 72).decode()
    once = add_signature_lines(signed, [a])
    assert once.startswith(signed) and once.endswith((a + "\n").encode())
    assert add_signature_lines(once, [a]) == once
    assert add_signature_lines(once, [b]) == signed + (b + "\n").encode()
    assert open_checkpoint(once, signer.verifier()).size == 1
    for bad in ("no dash", "\u2014 w.example/a !!!", "\u2014 w.example/a\tx"):
        with pytest.raises(MalformedNoteError):
            add_signature_lines(signed, [bad])
    with pytest.raises(MalformedNoteError):
        add_signature_lines(b"no signatures\n", [a])


# ---------------------------------------------------------------- hostile answers


def test_hostile_witness_answers_are_bounded_and_typed(
    tmp_path: Path, witness: Litewitness, log_vkey: Ed25519Verifier
) -> None:
    """What a real witness never sends: a stub on loopback answers each request with the next
    canned reply; none may crash, hang or add a line to the note."""
    good_vkey = witness.vkey
    key_id = CosignatureVerifier.from_vkey(good_vkey).key_id.to_bytes(4, "big")
    forged_sig = base64.b64encode(key_id + (1_800_000_000).to_bytes(8, "big") + bytes(64))
    forged = ("\u2014 " + WITNESS + " " + forged_sig.decode() + "\n").encode()
    replies: list[tuple[int, bytes]] = [
        (200, b"x" * (MAX_RESPONSE_BYTES + 10)),  # oversized
        (200, b"\xff\xfe not utf-8\n"),
        (200, ("\u2014 " + WITNESS + " " + base64.b64encode(bytes(76)).decode()).encode()),
        (200, ("\u2014 " + WITNESS + " " + base64.b64encode(bytes(76)).decode() + "\n").encode()),
        (200, forged),  # its name and key ID, a signature that does not verify
        (409, b"-1\n"),
        (409, b"99999999999999999999999\n"),
        (500, b"\x1b[31m boom"),
    ]

    class Stub(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body = replies.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 409:  # the spec's type: what is malformed is the size itself
                self.send_header("Content-Type", SIZE_CONTENT_TYPE)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # asked in the test's thread (Witnesses.cosign_latest), one canned reply per checkpoint
    c = make_collector(tmp_path / "data", [])
    ws = Witnesses(
        c.db,
        c.evidence,
        [WitnessConfig(name=WITNESS, url=f"http://127.0.0.1:{server.server_port}", vkey=good_vkey,
                       timeout_s=5, retry_s=0)],
    )  # fmt: skip
    try:
        append(c, 3)
        seen = []
        while replies:
            append(c, 1)
            c.maybe_checkpoint(force=True)
            assert ws.cosign_latest() is False
            seen.append(ws.status()[WITNESS])
        latest = c.evidence.latest()
        assert latest is not None and latest.checkpoint.size == c.evidence.log.size()
        assert witness_sigs(latest.note, log_vkey, witness) == []
        assert seen == [UNREACHABLE] + [REFUSED] * 6 + [UNREACHABLE]
        (stats,) = ws.stats()
        assert stats.requests == 8 and stats.cosignatures == 0
        assert stats.failures == {r: 0 for r in FAILURES} | {
            UNREACHABLE: 1,
            SERVER_ERROR: 1,
            BAD_COSIGNATURE: 4,
            CONFLICT: 2,
        }
    finally:
        ws.close()
        shut(c)
        server.shutdown()
        server.server_close()


def test_conflict_size_and_cosignature_parsing_reject_garbage() -> None:
    assert parse_conflict_size(b"12\n") == 12
    for ok in (SIZE_CONTENT_TYPE, "Text/X.TLOG.Size; charset=utf-8", " text/x.tlog.size "):
        assert is_size_answer(ok)
    for other in ("", "text/plain", "text/x.tlog.sizes", "text/x.tlog", "x/text/x.tlog.size"):
        assert not is_size_answer(other)
    for bad in (b"", b"12", b"012\n", b"-1\n", b"1 2\n", b"\xff\n", b"9" * 40 + b"\n"):
        with pytest.raises(ValueError):
            parse_conflict_size(bad)
    v = CosignatureVerifier(WITNESS, bytes(32))
    body = b"o\n1\n" + base64.b64encode(bytes(32)) + b"\n"
    for bad in (b"", b"\n", b"junk\n", "\u2014 a b\n".encode(), b"\n" * 40):
        with pytest.raises(CosignatureError):
            pick_cosignature(bad, body, v)


def test_witness_config_checks_url_and_vkey() -> None:
    v = CosignatureVerifier(WITNESS, bytes(range(32)))
    ok = WitnessConfig(name=WITNESS, url="https://w.example/", vkey=v.vkey)
    assert ok.url == "https://w.example" and ok.retry_s == 60
    bad_args: list[dict[str, str]] = [
        {"name": WITNESS, "url": "ftp://w.example", "vkey": v.vkey},
        {"name": "other.example/w", "url": "https://w.example", "vkey": v.vkey},
        {
            "name": WITNESS,
            "url": "https://w.example",
            "vkey": generate_key(WITNESS).verifier().vkey,
        },
    ]
    for args in bad_args:
        with pytest.raises(ValueError):
            WitnessConfig.model_validate(args)


# ---------------------------------------------------------------- answers litewitness never gives


#: a scripted answer: status, body (or "cosign"), and optionally its Content-Type (None: no
#: header); without one a 409 carries the spec's text/x.tlog.size and other answers none
Answer = tuple[int, bytes | str] | tuple[int, bytes | str, str | None]


class ScriptedWitness:
    """A minimal tlog-witness double on loopback, for the spec's answers litewitness cannot be
    made to give to a well-formed request from our collector: 400 (it finds nothing malformed
    in what we send), 404 (it answers 403 to an unknown origin), 422 to a request from size 0
    (the proof is empty then), 409 for the size it holds with another root (it answers such a
    request with 422), a 409 without the spec's Content-Type (it always sends it), and a 200
    that also carries cosignatures by keys we do not know (it signs with one key). Each request
    gets the next scripted answer; "cosign" is a real cosignature/v1 by the double's own key
    over the submitted checkpoint, after a line by an unknown key of another signature type."""

    name = "witness.fieldproof.example/scripted"

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.key = Ed25519PrivateKey.generate()
        public = self.key.public_key().public_bytes_raw()
        self.verifier = CosignatureVerifier(self.name, public)
        self.requests: list[bytes] = []
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                double.requests.append(request)
                answer = double.answers.pop(0)
                status, body = answer[0], answer[1]
                if len(answer) == 3:
                    ctype = answer[2]
                else:
                    ctype = SIZE_CONTENT_TYPE if status == 409 else None
                raw = double.cosign(request) if body == "cosign" else body
                assert isinstance(raw, bytes)
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                if ctype is not None:
                    self.send_header("Content-Type", ctype)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.config = WitnessConfig(
            name=self.name,
            url=f"http://127.0.0.1:{self.server.server_port}",
            vkey=self.verifier.vkey,
            timeout_s=5,
            retry_s=0,
        )

    def cosign(self, request: bytes) -> bytes:
        note = request[request.index(b"\n\n") + 2 :]
        body = note[: note.rfind(b"\n\n") + 1]
        ts = 1_800_000_000
        key_id = self.verifier.key_id.to_bytes(4, "big") + ts.to_bytes(8, "big")
        ours = base64.b64encode(key_id + self.key.sign(cosigned_message(ts, body))).decode()
        foreign = base64.b64encode(b"\x01\x02\x03\x04" + bytes(100)).decode()
        return f"\u2014 witness.other.example/v2 {foreign}\n\u2014 {self.name} {ours}\n".encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_each_spec_answer_is_handled_and_counted_by_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = ScriptedWitness(
        [
            (404, b"unknown log\n"),
            (400, b"bad request\n"),
            (422, b"bad proof\n"),
            (503, b"busy\n"),
            (200, "cosign"),  # with a foreign key's line first: ignored, ours kept
        ]
    )
    c = make_collector(tmp_path / "data", [])
    ws = Witnesses(c.db, c.evidence, [w.config])
    try:
        append(c, 3)
        c.maybe_checkpoint(force=True)
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            seen = []
            for _ in range(5):
                ws.cosign_latest()
                seen.append(ws.status()[w.name])
        assert seen == [REFUSED, REFUSED, REFUSED, UNREACHABLE, OK]
        (stats,) = ws.stats()
        assert stats.failures == {r: 0 for r in FAILURES} | {
            UNKNOWN_LOG: 1,
            BAD_REQUEST: 1,
            BAD_PROOF: 1,
            SERVER_ERROR: 1,
        }
        assert (stats.requests, stats.cosignatures) == (5, 1)
        assert all(r.startswith(b"old 0\n\n") for r in w.requests)
        latest = c.evidence.latest()
        assert latest is not None
        opened = open_note(latest.note, [c.evidence.verifier(), w.verifier])
        assert [s.name for s in opened.sigs] == [ORIGIN, w.name]
        assert b"witness.other.example" not in latest.note  # an unknown key's line is not kept
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        # logged once per change of state or of reason: each answer asks for another fix
        assert [e.split(":", 1)[0] for e in errors] == [
            f"witness {w.name} refuses to cosign (unknown_log)",
            f"witness {w.name} refuses to cosign (bad_request)",
            f"witness {w.name} refuses to cosign (bad_proof)",
            f"witness {w.name} is unreachable (server_error)",
        ]
        for error, status in zip(errors, (404, 400, 422, 503), strict=True):
            assert f"answered {status}" in error
        assert "register our origin" in errors[0]
    finally:
        ws.close()
        shut(c)
        w.close()


@pytest.mark.parametrize("answer", ["the size", "bare"])
def test_409_for_the_size_the_witness_holds_is_a_split_view(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    """The spec's answer when the witness holds another root for our size: 409 to ``old <our
    size>`` (litewitness answers 422 there, covered by the split-view test). The spec gives
    that 409 no body or type: with the size as a text/x.tlog.size answer, or bare."""
    c = make_collector(tmp_path / "data", [])
    append(c, 3)
    c.maybe_checkpoint(force=True)
    latest = c.evidence.latest()
    assert latest is not None
    size = latest.checkpoint.size
    same_size: Answer = (409, b"%d\n" % size) if answer == "the size" else (409, b"", None)
    w = ScriptedWitness([(409, b"%d\n" % size), same_size])
    ws = Witnesses(c.db, c.evidence, [w.config])
    try:
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            assert ws.cosign_latest() is False
        assert ws.status() == {w.name: SPLIT_VIEW}
        (stats,) = ws.stats()
        assert stats.failures == {r: 0 for r in FAILURES} | {SPLIT_VIEW: 1}
        assert [r.split(b"\n", 1)[0] for r in w.requests] == [b"old 0", b"old %d" % size]
        critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(critical) == 1 and "SPLIT VIEW" in critical[0]
    finally:
        ws.close()
        shut(c)
        w.close()


def scripted_witnesses(
    tmp_path: Path, answers: list[Answer]
) -> tuple[Collector, ScriptedWitness, Witnesses]:
    """A collector with a checkpoint and a double asked from the test's thread."""
    c = make_collector(tmp_path / "data", [])
    append(c, 3)
    c.maybe_checkpoint(force=True)
    w = ScriptedWitness(answers)
    return c, w, Witnesses(c.db, c.evidence, [w.config])


def test_a_refusal_is_logged_again_when_its_reason_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """refused/unknown_log, then refused/bad_signature (the operator registered our origin,
    with another key): a new line for the new reason, none for a retry that repeats one."""
    unknown, forbidden = (404, b"unknown log\n"), (403, b"invalid signature\n")
    c, w, ws = scripted_witnesses(tmp_path, [unknown, unknown, forbidden, forbidden])
    try:
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            for _ in range(4):
                assert ws.cosign_latest() is False
                assert ws.status() == {w.name: REFUSED}
        (stats,) = ws.stats()
        assert stats.failures == {r: 0 for r in FAILURES} | {UNKNOWN_LOG: 2, BAD_SIGNATURE: 2}
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2, errors
        assert errors[0].startswith(f"witness {w.name} refuses to cosign (unknown_log): ")
        assert "answered 404 'unknown log'" in errors[0]
        assert errors[1].startswith(f"witness {w.name} refuses to cosign (bad_signature): ")
        assert "answered 403 'invalid signature'" in errors[1]
        assert "current log vkey" in errors[1]
    finally:
        ws.close()
        shut(c)
        w.close()


@pytest.mark.parametrize("content_type", [None, "text/plain; charset=utf-8"])
def test_a_409_without_the_size_content_type_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content_type: str | None
) -> None:
    """C2SP tlog-witness: the 409 giving the size the witness knows MUST have Content-Type
    text/x.tlog.size. Without it the answer is malformed: its size is not believed (not
    remembered, not asked from); the same size with the type is followed."""
    c, w, ws = scripted_witnesses(
        tmp_path, [(409, b"2\n", content_type), (409, b"2\n"), (200, "cosign")]
    )
    try:
        with caplog.at_level(logging.INFO, logger="fieldproof.anchor.witness"):
            assert ws.cosign_latest() is False
            assert ws.status() == {w.name: REFUSED}
            (stats,) = ws.stats()
            assert stats.failures == {r: 0 for r in FAILURES} | {CONFLICT: 1}
            assert stats.requests == 1
            assert ws.states[0].size == 0
            assert c.db.execute("SELECT size FROM witness_state").fetchall() == []
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            sent = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
            assert len(errors) == 1, errors
            assert f"answered 409 with {sent}, not text/x.tlog.size" in errors[0]
            assert errors[0].startswith(f"witness {w.name} refuses to cosign (conflict): ")
            # with the spec's type the same answer is followed: asked again from size 2
            assert ws.cosign_latest() is True
        assert ws.status() == {w.name: OK}
        assert [r.split(b"\n", 1)[0] for r in w.requests] == [b"old 0", b"old 0", b"old 2"]
    finally:
        ws.close()
        shut(c)
        w.close()


# ---------------------------------------------------------------- starting and stopping


def witness_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("witness-")}


def test_a_failed_collector_start_leaves_no_witness_thread(
    tmp_path: Path, witness: Litewitness, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = witness_threads()

    def broker_client_fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no MQTT client (test)")

    # a step of Collector.__init__ after the witnesses are set up fails
    monkeypatch.setattr(collector.service, "make_client", broker_client_fails)
    with pytest.raises(RuntimeError, match="no MQTT client"):
        make_collector(tmp_path / "data", [witness_config(witness)])
    assert witness_threads() - before == set()
    monkeypatch.undo()
    c = make_collector(tmp_path / "data2", [witness_config(witness)])  # the same config starts
    try:
        assert len(witness_threads() - before) == 1
    finally:
        shut(c)
    assert witness_threads() - before == set()


def test_a_worker_that_cannot_start_every_thread_stops_the_started_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_collector(tmp_path / "data", [])
    doubles = [ScriptedWitness([]), ScriptedWitness([])]  # never asked: no checkpoint is sent
    ws = Witnesses(c.db, c.evidence, [d.config for d in doubles])
    worker = CosigningWorker(ws, lambda size: None)

    def cannot_start() -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(worker.threads[1], "start", cannot_start)
    try:
        with pytest.raises(RuntimeError, match="can't start"):
            worker.start()
        assert not worker.threads[0].is_alive() and not worker.alive
    finally:
        shut(c)
        for d in doubles:
            d.close()
