"""Trust policies for checkpoints: which logs to accept, which witnesses, and how many of them
(the quorum) must have cosigned a checkpoint before an inspector counts it as proof.

The file format is the Sigsum policy file (sigsum-go ``doc/policy.md``, "Sigsum policy file",
including its Appendix A for C2SP cosigned checkpoints), read exactly as specified there::

    log <key> [<url>]
    witness <name> <key> [<url>]
    group <name> <all|any|k> <name>...
    quorum <name>

Items are separated by ASCII spaces and tabs, ``#`` starts a comment, a group or the quorum
names only witnesses and groups defined on earlier lines (so there are no cycles), each name is
a member of one group at most once, ``none`` is the predefined empty quorum, and exactly one
quorum line is required. Duplicate log or witness keys are refused.

Keys are written either as C2SP note verifier keys (the form fieldproof uses everywhere: a log's
``name+hexid+base64(0x01 ‖ key)`` as ``fieldproof log key`` prints it, a witness's
``name+hexid+base64(0x04 ‖ key)`` cosignature/v1 vkey as litewitness announces it), or as
Sigsum's raw 64-digit hex Ed25519 key. A hex log key signs under the checkpoint's origin as key
name, and a hex witness key cosigns under the witness's policy name (Appendix A: witness names
are the cosignature key names). With a vkey, the witness's policy name is only a label.

Parsing is bounded (bytes, lines, line length, logs, witnesses, groups, members) and every
mistake is a :class:`PolicyError` naming the line. Evaluation never raises for what a checkpoint
holds: a bad cosignature is counted as invalid, not as signed; an unknown signer is counted and
ignored. docs/evidence-log.md §10."""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

from fieldproof.errors import ConfigError, FormatError
from fieldproof.formats.checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from fieldproof.formats.cosignature import (
    ALG_COSIGNATURE_V1,
    CosignatureError,
    CosignatureVerifier,
    verify_cosignature_line,
)
from fieldproof.formats.note import (
    ALG_ED25519,
    Ed25519Verifier,
    NoteError,
    UnverifiedNoteError,
    check_key_name,
    open_note,
)

__all__ = ["MAX_POLICY_BYTES", "Policy", "PolicyError", "PolicyResult"]

#: the largest policy file read (Sigsum's public policies are under 4 KiB)
MAX_POLICY_BYTES = 64 * 1024
MAX_LINES = 2000
MAX_LINE_CHARS = 4096
#: Sigsum's Appendix B asks for at least 32 of each; these leave room, not abuse
MAX_LOGS = 64
MAX_WITNESSES = 256
MAX_GROUPS = 256
MAX_MEMBERS = 256
MAX_NAME_CHARS = 256

NONE = "none"
_SIG_PREFIX = "\u2014 "
_HEX = frozenset("0123456789abcdefABCDEF")


class PolicyError(ConfigError):
    """A policy file that cannot be used; the message names the line and what to fix."""


@dataclass(frozen=True)
class LogKey:
    """A log the policy accepts. ``verifier`` is None for a hex key (named by the origin)."""

    key: str
    public_key: bytes
    verifier: Ed25519Verifier | None
    url: str | None
    line: int


@dataclass(frozen=True)
class WitnessKey:
    name: str
    verifier: CosignatureVerifier
    url: str | None
    line: int


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class PolicyResult:
    """What one checkpoint note is worth under a policy."""

    #: the checkpoint, when a log of the policy signed it
    checkpoint: Checkpoint | None
    #: why the checkpoint counts for nothing (no policy log signed it, malformed), or None
    problem: str | None
    #: the quorum's name and whether the witnesses that signed meet it
    quorum: str
    quorum_met: bool
    #: policy names of witnesses with a valid cosignature/v1 over this checkpoint
    signed: tuple[str, ...] = ()
    #: policy witnesses without one (their line is absent, or does not verify)
    missing: tuple[str, ...] = ()
    #: policy witnesses whose line is present but does not verify (also in ``missing``)
    invalid: tuple[str, ...] = ()
    #: signature lines from keys the policy does not name (ignored)
    unknown_signatures: int = 0
    #: groups whose threshold is met, in definition order
    groups_met: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Signed by a policy log and cosigned by a quorum of its witnesses."""
        return self.problem is None and self.quorum_met


def _fail(line: int, message: str) -> PolicyError:
    return PolicyError(f"policy line {line}: {message}")


def _parse_hex_key(text: str) -> bytes | None:
    if len(text) != 64 or not set(text) <= _HEX:
        return None
    return bytes.fromhex(text)


def _check_url(line: int, url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise _fail(line, f"{url[:80]!r} is not an http:// or https:// URL")
    return url


class Policy:
    """A parsed trust policy. Build it with :meth:`parse`."""

    def __init__(
        self,
        logs: list[LogKey],
        witnesses: dict[str, WitnessKey],
        groups: dict[str, Group],
        quorum: str,
    ) -> None:
        self.logs = logs
        self.witnesses = witnesses
        self.groups = groups
        self.quorum = quorum

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, text: str | bytes) -> Policy:
        """Parse a policy file's content. Raises :class:`PolicyError` naming the line."""
        if isinstance(text, bytes | bytearray):
            if len(text) > MAX_POLICY_BYTES:
                raise PolicyError(
                    f"policy is {len(text)} bytes, over the {MAX_POLICY_BYTES} limit; a policy "
                    "lists keys, not data"
                )
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PolicyError(
                    f"policy is not UTF-8 (byte {exc.start}); save it as UTF-8 text"
                ) from None
        if not isinstance(text, str):
            raise PolicyError(f"a policy is text, got {type(text).__name__}")
        if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
            raise PolicyError(f"policy is over the {MAX_POLICY_BYTES}-byte limit")
        lines = text.split("\n")
        if len(lines) > MAX_LINES:
            raise PolicyError(f"policy has {len(lines)} lines, over the {MAX_LINES} limit")

        logs: list[LogKey] = []
        log_keys: set[bytes] = set()
        witnesses: dict[str, WitnessKey] = {}
        witness_keys: set[tuple[str, int]] = set()
        groups: dict[str, Group] = {}
        used_as_member: set[str] = set()
        quorum: str | None = None

        def defined(n: int, name: str) -> str:
            if name != NONE and name not in witnesses and name not in groups:
                raise _fail(
                    n,
                    f"{name[:80]!r} is not a witness or group defined on an earlier line "
                    "(define names before they are used)",
                )
            return name

        def new_name(n: int, name: str) -> str:
            if len(name) > MAX_NAME_CHARS:
                raise _fail(n, f"name longer than {MAX_NAME_CHARS} characters")
            if name == NONE or name in witnesses or name in groups:
                raise _fail(n, f"the name {name[:80]!r} is already defined (or is 'none')")
            return name

        for n, raw in enumerate(lines, 1):
            if len(raw) > MAX_LINE_CHARS:
                raise _fail(n, f"longer than {MAX_LINE_CHARS} characters")
            bad = next((c for c in raw if (ord(c) < 0x20 and c != "\t") or c == "\x7f"), None)
            if bad is not None:
                raise _fail(
                    n,
                    f"control character {bad!r}; only tab and newline are allowed (save the "
                    "file with LF line endings)",
                )
            items = raw.split("#", 1)[0].replace("\t", " ").split(" ")
            items = [i for i in items if i]
            if not items:
                continue
            keyword, args = items[0], items[1:]
            if keyword == "log":
                if not 1 <= len(args) <= 2:
                    raise _fail(n, "a log line is: log <key> [<url>]")
                if len(logs) >= MAX_LOGS:
                    raise _fail(n, f"more than {MAX_LOGS} logs")
                entry = cls._log_key(n, args[0], _check_url(n, args[1]) if len(args) > 1 else None)
                if entry.public_key in log_keys:
                    raise _fail(n, "this log key is already listed (duplicate logs are refused)")
                log_keys.add(entry.public_key)
                logs.append(entry)
            elif keyword == "witness":
                if not 2 <= len(args) <= 3:
                    raise _fail(n, "a witness line is: witness <name> <key> [<url>]")
                if len(witnesses) >= MAX_WITNESSES:
                    raise _fail(n, f"more than {MAX_WITNESSES} witnesses")
                name = new_name(n, args[0])
                url = _check_url(n, args[2]) if len(args) > 2 else None
                w = WitnessKey(name, cls._witness_key(n, name, args[1]), url, n)
                ident = (w.verifier.name, w.verifier.key_id)
                if ident in witness_keys:
                    raise _fail(n, "this witness key is already listed (duplicates are refused)")
                witness_keys.add(ident)
                witnesses[name] = w
            elif keyword == "group":
                if len(args) < 3:
                    raise _fail(n, "a group line is: group <name> <all|any|k> <member>...")
                if len(groups) >= MAX_GROUPS:
                    raise _fail(n, f"more than {MAX_GROUPS} groups")
                name = new_name(n, args[0])
                members = tuple(defined(n, m) for m in args[2:])
                if len(members) > MAX_MEMBERS:
                    raise _fail(n, f"more than {MAX_MEMBERS} members")
                if NONE in members:
                    raise _fail(n, "'none' cannot be a group member")
                for m in members:
                    if m in used_as_member:
                        raise _fail(
                            n, f"{m!r} is already a member of a group (each name is a member once)"
                        )
                    used_as_member.add(m)
                groups[name] = Group(name, cls._threshold(n, args[1], len(members)), members, n)
            elif keyword == "quorum":
                if len(args) != 1:
                    raise _fail(n, "a quorum line is: quorum <name>")
                if quorum is not None:
                    raise _fail(n, "a second quorum line (a policy has exactly one)")
                quorum = defined(n, args[0])
            else:
                raise _fail(
                    n,
                    f"unknown keyword {keyword[:40]!r}; a policy line starts with log, witness, "
                    "group or quorum",
                )
        if not logs:
            raise PolicyError("the policy lists no log: add a line 'log <key>'")
        if quorum is None:
            raise PolicyError(
                "the policy has no quorum line: add 'quorum <witness or group>' (or 'quorum none')"
            )
        return cls(logs, witnesses, groups, quorum)

    @staticmethod
    def _log_key(n: int, key: str, url: str | None) -> LogKey:
        raw = _parse_hex_key(key)
        if raw is not None:
            try:
                Ed25519Verifier("x", raw)  # a valid Ed25519 point
            except (FormatError, ValueError):
                raise _fail(n, "the hex log key is not an Ed25519 public key") from None
            return LogKey(key, raw, None, url, n)
        try:
            v = Ed25519Verifier.from_vkey(key)
        except (FormatError, ValueError) as exc:
            raise _fail(
                n,
                f"the log key is neither a note verifier key (name+hexid+base64, type "
                f"0x{ALG_ED25519:02x}) nor 64 hex digits: {exc}",
            ) from None
        return LogKey(key, v.public_key, v, url, n)

    @staticmethod
    def _witness_key(n: int, name: str, key: str) -> CosignatureVerifier:
        raw = _parse_hex_key(key)
        try:
            if raw is not None:
                check_key_name(name)  # a hex key cosigns under the policy name
                return CosignatureVerifier(name, raw)
            return CosignatureVerifier.from_vkey(key)
        except (FormatError, ValueError) as exc:
            raise _fail(
                n,
                f"the witness key is neither a cosignature/v1 vkey (name+hexid+base64, type "
                f"0x{ALG_COSIGNATURE_V1:02x}) nor 64 hex digits with a valid key name: {exc}",
            ) from None

    @staticmethod
    def _threshold(n: int, text: str, members: int) -> int:
        if text == "all":
            return members
        if text == "any":
            return 1
        if not text.isascii() or not text.isdigit() or len(text) > 4:
            raise _fail(n, f"the threshold {text[:20]!r} is not all, any or a number")
        k = int(text)
        if not 1 <= k <= members:
            raise _fail(n, f"the threshold {k} is not between 1 and the {members} member(s)")
        return k

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, note: bytes) -> PolicyResult:
        """Verify the log's signature and each policy witness's cosignature/v1 on a checkpoint
        note, and say whether the quorum is met. Never raises for the note's content."""
        witness_names = tuple(self.witnesses)

        def nothing(problem: str) -> PolicyResult:
            return PolicyResult(None, problem, self.quorum, False, missing=witness_names)

        checkpoint, problem = self._open(note)
        if checkpoint is None:
            return nothing(problem or "not a checkpoint")
        text, sig_lines = self._split(note)

        by_key = {(w.verifier.name, w.verifier.key_id): w for w in self.witnesses.values()}
        log_ids = {(v.name, v.key_id) for v in self._log_verifiers(checkpoint.origin)}
        signed: set[str] = set()
        invalid: set[str] = set()
        unknown = 0
        for line in sig_lines:
            ident = self._line_key(line)
            if ident in log_ids:
                continue
            w = by_key.get(ident)
            if w is None:
                unknown += 1
                continue
            try:
                verify_cosignature_line(line, text, w.verifier)
            except CosignatureError:
                invalid.add(w.name)
                continue
            signed.add(w.name)
        invalid -= signed  # a second, valid line by the same witness counts
        met = self._satisfied(signed)
        return PolicyResult(
            checkpoint,
            None,
            self.quorum,
            self.quorum == NONE or self.quorum in met,
            signed=tuple(n for n in witness_names if n in signed),
            missing=tuple(n for n in witness_names if n not in signed),
            invalid=tuple(n for n in witness_names if n in invalid),
            unknown_signatures=unknown,
            groups_met=tuple(g for g in self.groups if g in met),
        )

    def _log_verifiers(self, origin: str) -> list[Ed25519Verifier]:
        out = []
        for entry in self.logs:
            if entry.verifier is not None:
                out.append(entry.verifier)
            else:
                try:
                    out.append(Ed25519Verifier(origin, entry.public_key))
                except (FormatError, ValueError):  # the origin is no key name
                    continue
        return out

    def _open(self, note: bytes) -> tuple[Checkpoint | None, str | None]:
        if not isinstance(note, bytes | bytearray):
            return None, f"a checkpoint note is bytes, got {type(note).__name__}"
        note = bytes(note)
        split = note.rfind(b"\n\n")
        if split < 0:
            return None, "not a signed note: no blank line before its signatures"
        try:
            origin = parse_checkpoint(note[: split + 1]).origin
            opened = open_note(note, self._log_verifiers(origin))
            return parse_checkpoint(opened.text), None
        except UnverifiedNoteError:
            return None, f"the checkpoint of {origin!r} is not signed by any log of the policy"
        except (NoteError, CheckpointError) as exc:
            return None, f"the checkpoint does not verify: {exc}"

    @staticmethod
    def _split(note: bytes) -> tuple[bytes, list[str]]:
        """(note text up to its last newline, signature lines) of a note that opened."""
        split = note.rfind(b"\n\n")
        return note[: split + 1], note[split + 2 : -1].decode("utf-8").split("\n")

    @staticmethod
    def _line_key(line: str) -> tuple[str, int]:
        """A signature line's key name and key ID (the note opened: the form is valid)."""
        name, _, b64 = line.removeprefix(_SIG_PREFIX).partition(" ")
        try:  # 8 base64 characters are 6 bytes: the 4-byte key ID and more
            raw = binascii.a2b_base64(b64[:8].encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            return name, -1
        return name, int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1

    def _satisfied(self, signed: set[str]) -> set[str]:
        """Every witness and group name that "witnessed" (Sigsum's term): a witness that
        signed, a group with at least its threshold of members that did. Groups only name
        earlier definitions, so one pass in definition order decides them all."""
        met = set(signed)
        for g in self.groups.values():
            if sum(1 for m in g.members if m in met) >= g.threshold:
                met.add(g.name)
        return met

    def describe(self) -> str:
        """One line for a report: the logs, witnesses and quorum this policy holds."""
        kind = "group" if self.quorum in self.groups else "witness"
        q = "none" if self.quorum == NONE else f"{kind} {self.quorum}"
        return (
            f"{len(self.logs)} log(s), {len(self.witnesses)} witness(es), "
            f"{len(self.groups)} group(s), quorum {q}"
        )
