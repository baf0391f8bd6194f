"""Witness cosigning (C2SP tlog-witness, tlog-cosignature): after each checkpoint, ask every
configured witness to cosign it, verify the cosignatures with the witnesses' keys, and add them
to the stored checkpoint note, so the public tiles' ``checkpoint`` carries them.

A witness remembers the largest tree of our log it has cosigned and cosigns a new checkpoint
only with a consistency proof from that size (``old <size>`` in the request). We keep that size
per witness in ``witness_state`` (collector database); when it is stale the witness answers 409
with the size it knows (``Content-Type: text/x.tlog.size``, as the spec requires; a 409 without
it is a malformed answer) and we retry once from there. A witness that is down or refuses costs
one short request per ``retry_s`` (doubling while it keeps failing, up to ``MAX_RETRY_S``) and
is reported once per change of state or of counted reason (and counted); it never stops
ingestion or checkpointing.
A witness that holds a different tree of our log (it rejects our consistency proof from the
size it knows, answers 409 to our checkpoint of the very size it knows, or knows a larger tree
than ours) is a split view: someone signs another history under our log key, or our log was
rolled back. That is logged at CRITICAL with ``SPLIT VIEW`` in the message. Every failure is
counted by its reason (``FAILURES``: one per C2SP tlog-witness answer class, e.g. 404
``unknown_log``, 403 ``bad_signature``).

The collector asks from :class:`CosigningWorker`'s threads, never from the ingest path: a
witness that hangs or is down delays no batch and no checkpoint. docs/evidence-log.md §9."""

from __future__ import annotations

import base64
import binascii
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from anchor.evidence import EvidenceLog, StoredCheckpoint
from fieldproof.config import WitnessConfig
from fieldproof.errors import ChainError, FormatError
from fieldproof.formats.checkpoint import open_checkpoint
from fieldproof.formats.cosignature import (
    CosignatureError,
    CosignatureVerifier,
    verify_cosignature_line,
)
from fieldproof.formats.note import Verifier, add_signature_lines, open_note

log = logging.getLogger("fieldproof.anchor.witness")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_state (
    witness TEXT PRIMARY KEY,      -- the configured witness name
    size INTEGER NOT NULL,         -- the size of our log the witness last cosigned (or knows)
    updated_at REAL NOT NULL
);
"""

#: the largest witness answer read (a cosignature line is ~150 bytes)
MAX_RESPONSE_BYTES = 16 * 1024
#: the media type of a 409 answer that gives the size the witness knows (C2SP tlog-witness:
#: the response MUST have it; litewitness v0.6.1 sends exactly this)
SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: cosignature lines accepted in one answer
MAX_RESPONSE_LINES = 16

# states a witness is in; a change of state is logged once
OK = "ok"
UNREACHABLE = "unreachable"
REFUSED = "refused"
SPLIT_VIEW = "split_view"
# why a request brought no cosignature (the ``reason`` label of the failures counter), one per
# C2SP tlog-witness answer class; each maps to the state above that it puts the witness in
#: 404: the witness does not know our log's origin (refused)
UNKNOWN_LOG = "unknown_log"
#: 403: no signature on our checkpoint verifies with the key it has for our origin (refused)
BAD_SIGNATURE = "bad_signature"
#: 400: it found our request malformed (refused)
BAD_REQUEST = "bad_request"
#: 422 to a request from size 0, whose proof is empty: a proof it should not reject (refused)
BAD_PROOF = "bad_proof"
#: 409 that cannot be followed: no text/x.tlog.size Content-Type, a malformed size, or sizes
#: that keep changing (refused)
CONFLICT = "conflict"
#: 200 without a valid cosignature by the configured key (refused)
BAD_COSIGNATURE = "bad_cosignature"
#: 5xx or an answer the protocol does not have (unreachable)
SERVER_ERROR = "server_error"
#: a valid cosignature that could not be added to our stored note (refused; not expected)
NOT_STORED = "not_stored"
#: the failure reasons counted per witness: unreachable (no answer, a timeout, an oversized
#: answer), the reasons above, and split_view (409 with a larger size or the same size and
#: another root, 422 to a proof from the size it knows)
FAILURES = (
    UNREACHABLE,
    SERVER_ERROR,
    UNKNOWN_LOG,
    BAD_SIGNATURE,
    BAD_REQUEST,
    BAD_PROOF,
    CONFLICT,
    BAD_COSIGNATURE,
    NOT_STORED,
    SPLIT_VIEW,
)
#: the longest wait between two tries of a failing witness (unless its retry_s is longer)
MAX_RETRY_S = 900.0
#: the worker's shortest wait after a failure, whatever retry_s says (no busy loop at retry_s=0)
MIN_WORKER_RETRY_S = 0.25
#: how long shutdown waits for the witnesses' threads (a request in flight is abandoned)
STOP_WAIT_S = 2.0


#: answers that refuse our checkpoint: status -> (reason counted, what the message says to do)
_REFUSALS = {
    404: (
        UNKNOWN_LOG,
        "the witness does not know our log's origin; register our origin and "
        "log vkey with its operator",
    ),
    403: (
        BAD_SIGNATURE,
        "no signature on our checkpoint verifies with a key the witness has for our origin "
        "(litewitness also answers 403 to an origin it does not know); register our origin "
        "and current log vkey with its operator",
    ),
    400: (BAD_REQUEST, "the witness found our request malformed; check its version and ours"),
    422: (
        BAD_PROOF,
        "the witness rejected a request from size 0 with no proof; check its version and ours",
    ),
}


class WitnessUnavailable(ChainError):
    """The witness could not be asked (connection, timeout, an oversized or broken answer)."""


@dataclass(frozen=True)
class WitnessResponse:
    status: int
    body: bytes
    #: the Content-Type header as sent ("" without one)
    content_type: str = ""


class WitnessClient:
    """The HTTP side of one witness: ``POST <url>/add-checkpoint``, bounded and typed."""

    def __init__(self, config: WitnessConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self.http = http or httpx.Client(follow_redirects=False, trust_env=False)

    @staticmethod
    def request_body(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
        lines = [f"old {old_size}\n".encode()]
        lines += [base64.b64encode(h) + b"\n" for h in proof]
        return b"".join(lines) + b"\n" + note

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: bytes) -> WitnessResponse:
        body = self.request_body(old_size, proof, note)
        # httpx's timeout is per read: a witness dripping bytes is cut off by this deadline
        deadline = time.monotonic() + 2 * self.config.timeout_s
        try:
            with self.http.stream(
                "POST",
                self.config.url + "/add-checkpoint",
                content=body,
                timeout=self.config.timeout_s,
            ) as r:
                data = b""
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > MAX_RESPONSE_BYTES:
                        raise WitnessUnavailable(
                            f"answer ({r.status_code}) over {MAX_RESPONSE_BYTES} bytes"
                        )
                    if time.monotonic() > deadline:
                        raise WitnessUnavailable(
                            f"answer not complete in {2 * self.config.timeout_s:.0f} s"
                        )
                return WitnessResponse(r.status_code, data, r.headers.get("content-type", ""))
        except (httpx.HTTPError, OSError) as exc:
            raise WitnessUnavailable(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.http.close()


def _printable(raw: bytes) -> str:
    """A witness's error text, safe to log (no control characters, bounded)."""
    text = raw.decode("utf-8", errors="replace").strip()
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def is_size_answer(content_type: str) -> bool:
    """Whether a Content-Type is the spec's ``text/x.tlog.size`` (parameters ignored)."""
    return content_type.split(";", 1)[0].strip().lower() == SIZE_CONTENT_TYPE


def parse_conflict_size(body: bytes) -> int:
    """A 409's body: the size the witness knows, ``<decimal>\\n``. ValueError otherwise."""
    if len(body) > 32 or not body.endswith(b"\n"):
        raise ValueError("a 409 answer is one line with a tree size")
    text = body[:-1].decode("ascii", errors="strict")
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or len(text) > 20:
        raise ValueError(f"a 409 answer must be a decimal tree size, got {text[:32]!r}")
    return int(text)


def _signature_key(line: str) -> tuple[str, int]:
    """The (name, key ID) of a note signature line, whatever its signature type: the spec has
    a client ignore the cosignatures of keys it does not know (other witnesses' keys, other
    cosignature versions) rather than fail on them."""
    if not line.startswith("\u2014 "):
        raise CosignatureError("a line of the answer is not a signature line (\u2014 name sig)")
    name, sep, b64 = line[2:].partition(" ")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise CosignatureError(f"the signature line of {name[:64]!r} is not base64") from None
    if not sep or not name or len(raw) < 5:
        raise CosignatureError("a signature line of the answer has no name, key ID or signature")
    return name, int.from_bytes(raw[:4], "big")


def pick_cosignature(body: bytes, checkpoint_text: bytes, verifier: CosignatureVerifier) -> str:
    """The configured witness's cosignature line from a 200 answer, verified over the checkpoint
    text. Raises CosignatureError when the answer holds no valid one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CosignatureError("the witness's answer is not UTF-8") from None
    if not text.endswith("\n"):
        raise CosignatureError("the witness's answer does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) > MAX_RESPONSE_LINES:
        raise CosignatureError(f"the witness sent {len(lines)} lines, over {MAX_RESPONSE_LINES}")
    for line in lines:
        if _signature_key(line) == (verifier.name, verifier.key_id):
            return verify_cosignature_line(line, checkpoint_text, verifier).line
    raise CosignatureError(
        f"the answer has no cosignature by {verifier.name}/{verifier.key_id:08x} (check the "
        "witness's vkey in the config)"
    )


@dataclass
class WitnessState:
    config: WitnessConfig
    verifier: CosignatureVerifier
    client: WitnessClient
    size: int
    status: str = OK
    detail: str = ""
    retry_at: float = 0.0
    #: the checkpoint size whose stored note carries this witness's cosignature
    done_size: int = -1
    #: failures in a row (the retry delay doubles with each, up to MAX_RETRY_S)
    failures: int = 0
    #: the reason the last failure was counted under ("" while OK); a change is logged
    reason: str = ""
    #: wall-clock time of the last cosignature added to a note (None: none since start)
    last_success: float | None = None


@dataclass(frozen=True)
class WitnessStats:
    """One witness's counters since the collector started, for /metrics."""

    name: str
    status: str
    requests: int
    cosignatures: int
    #: failure reason (FAILURES) -> count
    failures: dict[str, int]
    last_success: float | None


class Witnesses:
    """All configured witnesses of one log. ``cosign_latest()`` asks every witness that is due;
    :class:`CosigningWorker` asks each one from its own thread (``cosign_one``).

    ``db`` must be a connection no other thread writes through (the collector opens one for
    the witnesses): a witness answer is committed in its own short transaction, which on a
    shared connection would commit another thread's half-done one."""

    def __init__(
        self,
        db: sqlite3.Connection,
        evidence: EvidenceLog,
        configs: Sequence[WitnessConfig],
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.evidence = evidence
        self.clock = clock
        #: (witness name, outcome) -> count: requests, cosigned, and each reason in FAILURES
        self.counters: Counter[tuple[str, str]] = Counter()
        self.states: list[WitnessState] = []
        #: set at shutdown: an answer that arrives later is not stored
        self.stopping = threading.Event()
        # the database connection and the counters are shared by the witnesses' threads
        self._lock = threading.RLock()
        if not configs:
            return
        db.executescript(_SCHEMA)
        for c in configs:
            row = db.execute("SELECT size FROM witness_state WHERE witness=?", (c.name,)).fetchone()
            self.states.append(
                WitnessState(
                    c,
                    CosignatureVerifier.from_vkey(c.vkey),
                    WitnessClient(c, http),
                    int(row[0]) if row else 0,
                )
            )

    # ------------------------------------------------------------------ public

    def cosign_latest(self) -> bool:
        """Ask each witness that is due to cosign the latest stored checkpoint, one after the
        other; True when cosignatures were added to the stored note. Never raises for a
        witness's failure."""
        changed = False
        for st in self.states:
            if self.clock() >= st.retry_at and self.cosign_one(st) is not None:
                changed = True
        return changed

    def cosign_one(self, st: WitnessState) -> StoredCheckpoint | None:
        """Ask one witness to cosign the latest stored checkpoint unless its note already
        carries the witness's cosignature. The stored checkpoint with the cosignature added,
        or None (nothing to do, or the witness failed: counted and logged)."""
        with self._lock:
            current = self.evidence.latest()
            if current is None or st.done_size == current.checkpoint.size:
                return None
            if self._has_cosignature(current.note, st):  # stored before a restart
                st.done_size = current.checkpoint.size
                return None
        line = self._cosign_one(st, current)
        if line is None or self.stopping.is_set():
            return None
        with self._lock:
            return self._store(st, current, line)

    def note_of(self, size: int) -> bytes | None:
        """The stored note of the checkpoint of ``size`` entries (with its cosignatures)."""
        with self._lock:
            row = self.db.execute("SELECT note FROM checkpoints WHERE size=?", (size,)).fetchone()
        return None if row is None else bytes(row[0])

    def status(self) -> dict[str, str]:
        """witness name -> state (ok, unreachable, refused, split_view)."""
        return {st.config.name: st.status for st in self.states}

    def stats(self) -> list[WitnessStats]:
        """A consistent copy of every witness's counters (read from the metrics thread)."""
        with self._lock:
            out = []
            for st in self.states:
                name = st.config.name
                out.append(
                    WitnessStats(
                        name,
                        st.status,
                        self.counters[(name, "requests")],
                        self.counters[(name, "cosigned")],
                        {r: self.counters[(name, r)] for r in FAILURES},
                        st.last_success,
                    )
                )
            return out

    def close(self) -> None:
        self.stopping.set()
        for st in self.states:
            st.client.close()

    # ------------------------------------------------------------------ internals

    def _log_verifier(self) -> Verifier:
        return self.evidence.verifier()

    def _has_cosignature(self, note: bytes, st: WitnessState) -> bool:
        try:
            opened = open_note(note, [self._log_verifier(), st.verifier])
        except FormatError:
            return False
        return any(
            (s.name, s.key_id) == (st.verifier.name, st.verifier.key_id) for s in opened.sigs
        )

    def _cosign_one(self, st: WitnessState, cp: StoredCheckpoint) -> str | None:
        size = cp.checkpoint.size
        text = cp.note[: cp.note.rfind(b"\n\n") + 1]
        old = st.size if st.size <= size else 0
        tried: set[int] = set()
        for _ in range(3):
            tried.add(old)
            with self._lock:
                proof = self.evidence.log.consistency_proof(old, size) if old else []
                self.counters[(st.config.name, "requests")] += 1
            try:
                r = st.client.add_checkpoint(old, proof, cp.note)
            except WitnessUnavailable as exc:
                self._fail(st, UNREACHABLE, f"cannot reach {st.config.url}: {exc}")
                return None
            reason = _printable(r.body[:200])
            if r.status == 200:
                try:
                    line = pick_cosignature(r.body, text, st.verifier)
                except CosignatureError as exc:
                    self._fail(
                        st,
                        REFUSED,
                        f"answered 200 without a valid cosignature: {exc}",
                        BAD_COSIGNATURE,
                    )
                    return None
                return line
            if r.status == 409 and not is_size_answer(r.content_type):
                if old == size:
                    # the spec's 409 for another root of the very size it knows: the spec gives
                    # that answer no body or type (litewitness answers 422 there instead)
                    self._fail(
                        st,
                        SPLIT_VIEW,
                        f"it holds another tree of {size} entries of our log (409 to our "
                        "checkpoint of the size it knows: the root hashes differ)",
                    )
                    return None
                sent = _printable(r.content_type.encode()[:64])
                self._fail(
                    st,
                    REFUSED,
                    f"answered 409 with {f'Content-Type {sent!r}' if sent else 'no Content-Type'}"
                    f", not {SIZE_CONTENT_TYPE} as C2SP tlog-witness requires of the answer "
                    "giving the size it knows: a malformed answer, its size is not read; check "
                    "the witness's version (or a proxy in front of it that rewrites the header)",
                    CONFLICT,
                )
                return None
            if r.status == 409:
                try:
                    known = parse_conflict_size(r.body)
                except (ValueError, UnicodeDecodeError) as exc:
                    self._fail(st, REFUSED, f"answered 409 with a malformed size: {exc}", CONFLICT)
                    return None
                if known > size:
                    self._fail(
                        st,
                        SPLIT_VIEW,
                        f"it has cosigned a tree of {known} entries of our log, larger than our "
                        f"latest checkpoint ({size}): another history is signed under our log "
                        "key, or our log was rolled back",
                    )
                    return None
                if known == size == old:
                    self._fail(
                        st,
                        SPLIT_VIEW,
                        f"it holds another tree of {size} entries of our log (409 to our "
                        "checkpoint of the size it knows: the root hashes differ)",
                    )
                    return None
                self._remember_size(st, known)
                if known in tried:
                    self._fail(st, REFUSED, f"answered 409 twice for size {known}", CONFLICT)
                    return None
                old = known
                continue
            if r.status == 422 and old > 0:
                self._fail(
                    st,
                    SPLIT_VIEW,
                    f"it rejects our consistency proof from size {old} (the size it knows) to "
                    f"{size}: its tree of {old} entries of our log is not ours ({reason!r})",
                )
                return None
            if r.status in _REFUSALS:
                why, todo = _REFUSALS[r.status]
                self._fail(st, REFUSED, f"answered {r.status} {reason!r}: {todo}", why)
                return None
            self._fail(st, UNREACHABLE, f"answered {r.status} {reason!r}", SERVER_ERROR)
            return None
        self._fail(st, REFUSED, "the witness's size kept changing", CONFLICT)
        return None

    def _store(self, st: WitnessState, cp: StoredCheckpoint, line: str) -> StoredCheckpoint | None:
        """Add the verified cosignature ``line`` to the stored note of ``cp``'s size. The note
        may have gained other witnesses' lines meanwhile: the line is added to what is stored
        now. Its body and the log's signature stay byte for byte what they were, so everyone
        who read the note before reads the same checkpoint in it after."""
        size = cp.checkpoint.size
        stored = self.note_of(size)
        if stored is None:  # not expected: checkpoints are never deleted
            self._fail(
                st, REFUSED, f"the checkpoint of size {size} is no longer stored", NOT_STORED
            )
            return None
        body = cp.note[: cp.note.index(b"\n\n") + 2]
        try:
            note = add_signature_lines(stored, [line])
            checked = open_checkpoint(
                note, [self._log_verifier(), st.verifier], origin=self.evidence.origin
            )
        except FormatError as exc:  # not expected: the line was verified above
            self._fail(
                st, REFUSED, f"its cosignature cannot be added to the note: {exc}", NOT_STORED
            )
            return None
        if checked != cp.checkpoint or not (stored.startswith(body) and note.startswith(stored)):
            self._fail(st, REFUSED, "the cosigned note no longer holds our checkpoint", NOT_STORED)
            return None
        with self.db:
            cur = self.db.execute(
                "UPDATE checkpoints SET note=? WHERE size=? AND note=?", (note, size, stored)
            )
            self._write_size(st, size)
        if cur.rowcount != 1:  # not expected: all note updates hold self._lock
            return None
        st.size = size
        st.done_size = size
        self.counters[(st.config.name, "cosigned")] += 1
        if st.status != OK:
            log.warning("witness %s cosigns again (size %d)", st.config.name, size)
        else:
            log.info("witness %s cosigned size %d", st.config.name, size)
        st.status, st.reason, st.detail, st.retry_at, st.failures = OK, "", "", 0.0, 0
        st.last_success = time.time()
        return StoredCheckpoint(cp.checkpoint, note, cp.created_at)

    def _remember_size(self, st: WitnessState, size: int) -> None:
        with self._lock, self.db:
            self._write_size(st, size)
        st.size = size

    def _write_size(self, st: WitnessState, size: int) -> None:
        self.db.execute(
            "INSERT INTO witness_state (witness, size, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(witness) DO UPDATE SET size=excluded.size, updated_at=excluded.updated_at",
            (st.config.name, size, time.time()),
        )

    def _fail(self, st: WitnessState, status: str, detail: str, reason: str = "") -> None:
        """Count the failure under ``reason`` (the state's name when it has no finer one),
        move the witness to state ``status`` and log a change of state or of reason once (a
        witness that goes from unknown_log to bad_signature asks the operator for another fix),
        not every retry that fails the same way."""
        counted = reason or status
        with self._lock:
            self.counters[(st.config.name, counted)] += 1
            st.failures += 1
            retry_s = st.config.retry_s
            delay = min(retry_s * 2 ** min(st.failures - 1, 16), max(retry_s, MAX_RETRY_S))
            st.retry_at = self.clock() + delay
            changed = (status, counted) != (st.status, st.reason)
            st.status, st.reason, st.detail = status, counted, detail
        if not changed:
            return
        name = st.config.name
        if status == SPLIT_VIEW:
            log.critical(
                "SPLIT VIEW reported by witness %s for log %s: %s. Do not trust checkpoints of "
                "this log until this is explained.",
                name,
                self.evidence.origin,
                detail,
            )
        else:
            state = "is unreachable" if status == UNREACHABLE else "refuses to cosign"
            log.error(
                "witness %s %s%s: %s; checkpoints go on without its cosignature, retrying "
                "after %.0f s and less often while it fails (up to every %.0f s)",
                name,
                state,
                "" if counted == status else f" ({counted})",  # the metrics' reason label
                detail,
                st.config.retry_s,
                max(st.config.retry_s, MAX_RETRY_S),
            )


class CosigningWorker:
    """Asks the witnesses for cosignatures off the ingest path: one daemon thread per witness,
    so a witness that hangs delays no other witness and never the collector's batches.

    The queue is the newest checkpoint size only (:meth:`submit`): a newer checkpoint
    supersedes one not yet cosigned, and each witness is asked for the latest stored one. A
    failing witness is retried after its growing delay (:class:`Witnesses`), at least
    ``MIN_WORKER_RETRY_S`` apart. ``on_cosigned(size)`` is called (from the witness's thread)
    after a cosignature was committed to the note of that size."""

    def __init__(self, witnesses: Witnesses, on_cosigned: Callable[[int], None]) -> None:
        self.witnesses = witnesses
        self.on_cosigned = on_cosigned
        self._cond = threading.Condition()
        self._wanted = 0
        self._stop = False
        #: witness name -> the checkpoint size it was last asked about (None while asking)
        self._attempted: dict[str, int | None] = {st.config.name: 0 for st in witnesses.states}
        self.threads = [
            threading.Thread(target=self._run, args=(st,), name=f"witness-{i}", daemon=True)
            for i, st in enumerate(witnesses.states)
        ]

    def start(self) -> None:
        """Start every witness's thread; if one cannot be started (no threads left), stop the
        ones already running before raising, so a failed start leaves no thread."""
        try:
            for t in self.threads:
                t.start()
        except BaseException:
            self.stop()
            raise

    def submit(self, size: int) -> None:
        """A checkpoint of ``size`` entries is stored: have it cosigned. Never waits."""
        with self._cond:
            if size > self._wanted:
                self._wanted = size
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every witness was asked about the newest submitted size, has its
        cosignature, or waits to retry after a failure; False when ``timeout`` passed first.
        For tests."""

        def idle() -> bool:
            return all(a is not None and a >= self._wanted for a in self._attempted.values())

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def stop(self, timeout: float = STOP_WAIT_S) -> list[str]:
        """Stop every thread; the names of witnesses still answering after ``timeout`` (their
        request is abandoned: its answer is not stored). Closes the witnesses' clients."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.witnesses.stopping.set()
        deadline = time.monotonic() + timeout
        busy = []
        for st, t in zip(self.witnesses.states, self.threads, strict=True):
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                busy.append(st.config.name)
        if busy:
            log.warning(
                "witness(es) %s still answering at shutdown; their requests are abandoned and "
                "the latest checkpoint is cosigned at the next start",
                ", ".join(busy),
            )
        self.witnesses.close()
        return busy

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _run(self, st: WitnessState) -> None:
        name = st.config.name
        while True:
            with self._cond:
                while not self._stop:
                    wanted = self._wanted
                    if wanted > max(st.done_size, 0):  # 0: nothing submitted yet
                        wait = st.retry_at - self.witnesses.clock()
                        if wait <= 0:
                            break
                        self._attempted[name] = max(self._attempted[name] or 0, wanted)
                    else:
                        self._attempted[name] = wanted
                        wait = None
                    self._cond.notify_all()
                    self._cond.wait(wait)
                if self._stop:
                    return
                self._attempted[name] = None
            stored = None
            try:
                stored = self.witnesses.cosign_one(st)
            except (sqlite3.Error, FormatError) as exc:
                log.error("witness %s: cosigning failed here, not at the witness: %s", name, exc)
                st.retry_at = self.witnesses.clock() + max(st.config.retry_s, MIN_WORKER_RETRY_S)
            except Exception:  # a bug must not end this witness's thread for good
                log.exception("witness %s: unexpected error while cosigning", name)
                st.retry_at = self.witnesses.clock() + max(st.config.retry_s, MIN_WORKER_RETRY_S)
            if stored is None and st.done_size < wanted:
                floor = MIN_WORKER_RETRY_S * 2 ** min(st.failures, 7)
                st.retry_at = max(st.retry_at, self.witnesses.clock() + floor)
            if stored is not None and not self._stop:
                try:
                    self.on_cosigned(stored.checkpoint.size)
                except Exception:
                    log.exception("witness %s: publishing its cosignature failed", name)
            with self._cond:
                self._attempted[name] = wanted
                self._cond.notify_all()
