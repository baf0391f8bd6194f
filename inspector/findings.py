"""Every finding code the inspector can report, with its severity and what it means.

The tables of docs/bundle.md §7 list the same codes; ``tests/inspector/test_findings_docs.py``
fails when the two differ, so a code cannot be added, dropped or re-graded on one side only.
A code is a :class:`str` (``StrEnum``): JSON, reports and comparisons see its plain name."""

from __future__ import annotations

import enum
from typing import Literal

from fieldproof.errors import FieldproofError

__all__ = ["FindingCode", "Severity", "SeverityError"]

Severity = Literal["error", "warning", "info"]



class SeverityError(FieldproofError, ValueError):
    """A finding was reported with a severity its code never takes (docs/bundle.md §7): a bug
    in the inspector, refused so the docs stay true."""


_E: tuple[Severity, ...] = ("error",)
_W: tuple[Severity, ...] = ("warning",)
_I: tuple[Severity, ...] = ("info",)


class FindingCode(enum.StrEnum):
    """A finding's code. ``severities``: the severity it is reported with (the first, its
    default) and any other it may take; ``meaning``: one line for the docs and the report."""

    severities: tuple[Severity, ...]
    meaning: str

    def __new__(cls, value: str, severities: tuple[Severity, ...] = _E,
                meaning: str = "") -> FindingCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.severities = severities
        member.meaning = meaning
        return member

    @property
    def severity(self) -> Severity:
        """The severity it is reported with unless a finding says otherwise."""
        return self.severities[0]

    # -- one bundle (docs/bundle.md §7)
    MALFORMED_BUNDLE = ("malformed_bundle", _E,
                        "the file is not a readable bundle (cut short, structure, limits)")
    LOG_KEY_INVALID = ("log_key_invalid", _E, "the log key string is unusable or names another log")
    LOG_KEY_MISMATCH = ("log_key_mismatch", _E,
                        "no checkpoint verifies with the pinned --log-key: wrong key, or a "
                        "bundle of another log; nothing else can be checked")
    CHECKPOINT_INVALID = ("checkpoint_invalid", _E, "a note does not verify with the log key")
    CHECKPOINT_ORDER = ("checkpoint_order", _E, "checkpoint sizes do not grow")
    CONSISTENCY_FAILED = ("consistency_failed", _E,
                          "a later checkpoint does not extend an earlier one")
    ANCHOR_INVALID = ("anchor_invalid", _E,
                      "the tx does not carry this checkpoint's record, or is not final")
    ANCHOR_CLAIM_MISMATCH = ("anchor_claim_mismatch", _E,
                             "the bundle's block number/id/time differ from the chain's")
    NODE_DISAGREEMENT = ("node_disagreement", _E, "the nodes asked answer differently")
    NODE_UNREACHABLE = ("node_unreachable", _E, "a node given could not be asked")
    REGISTRY_INVALID = ("registry_invalid", _E,
                        "a registry event is malformed or a rotation does not chain")
    ENROLLMENT_REQUEST_INVALID = ("enrollment_request_invalid", _E,
                                  "an enrollment's embedded request is not the gateway's")
    KNOWN_CHECKPOINT_INVALID = ("known_checkpoint_invalid", _E,
                                "a --known-checkpoint is not this log's, signed by its key")
    KNOWN_CHECKPOINT_UNLINKED = ("known_checkpoint_unlinked", _E,
                                 "nothing proves the bundle extends a known checkpoint")
    KNOWN_CHECKPOINT_CONFLICT = ("known_checkpoint_conflict", _E,
                                 "the bundle's history differs from a known checkpoint's")
    LOG_FORK = ("log_fork", _E,
                "two different roots signed for one tree size (bundle, mirror, witness "
                "checkpoint, known checkpoint, or two bundles): a split view")
    OUTSIDE_CHECKPOINT_INVALID = ("outside_checkpoint_invalid", _E,
                                  "a --mirror or --witness-checkpoint cannot be used: not this "
                                  "log's signed checkpoint, unreadable, or tiles that do not "
                                  "rebuild its root")
    OUTSIDE_CHECKPOINT_UNLINKED = ("outside_checkpoint_unlinked", _W,
                                   "an outside checkpoint could not be compared with anything")
    POLICY_LOG_UNKNOWN = ("policy_log_unknown", _E,
                          "no checkpoint of the bundle is signed by a log of the --policy")
    POLICY_QUORUM_NOT_MET = ("policy_quorum_not_met", _E,
                             "a checkpoint is covered neither by the policy's witness quorum "
                             "nor by a final anchor")
    POLICY_QUORUM_MET = ("policy_quorum_met", _I,
                         "every checkpoint is covered under the policy; names who cosigned")
    ANCHOR_CONFLICT = ("anchor_conflict", ("error", "warning"),
                       "an anchor on chain records another root for a size the log signed")
    ANCHOR_SCAN_INCOMPLETE = ("anchor_scan_incomplete", _W,
                              "--all-anchors did not read every block or anchor asked for")
    INCLUSION_FAILED = ("inclusion_failed", _E,
                        "an entry is not at its index in the log at its checkpoint")
    MESSAGE_MALFORMED = ("message_malformed", _E, "a message is not well-formed")
    BAD_SIGNATURE = ("bad_signature", _E, "a message does not verify with its gateway's key")
    UNKNOWN_KEY = ("unknown_key", _E, "no enrollment of its gateway before a message")
    REVOKED_KEY = ("revoked_key", _E, "a message logged after its gateway was revoked")
    DUPLICATE_SEQ = ("duplicate_seq", _E, "two different messages claim one sequence number")
    COMPLETENESS_CLAIM_INVALID = ("completeness_claim_invalid", _E,
                                  "the completeness claim does not check out")
    REGISTRY_WITHHELD = ("registry_withheld", _E, "registry events of the scope were left out")
    GATEWAY_WITHHELD = ("gateway_withheld", _E, "a gateway of the scope was left out")
    PERIOD_CUT = ("period_cut", _E, "a gateway's evidence stops short of the period's ends")
    MESSAGES_WITHHELD = ("messages_withheld", _E, "messages of a gateway's run were left out")
    INFLUX_CHANGED = ("influx_changed", _E, "database points differ from the evidence")
    INFLUX_ADDED = ("influx_added", _E, "database points the evidence does not prove")
    INFLUX_DELETED = ("influx_deleted", _E, "proven points missing from the database")
    INFLUX_NO_POINTS = ("influx_no_points", _E,
                        "the database holds no point of the bundle's gateways: wrong database?")
    INFLUX_UNREADABLE = ("influx_unreadable", _E, "the database could not be read")
    LOG_KEY_NOT_PINNED = ("log_key_not_pinned", _W, "the log key was taken from the bundle")
    ANCHORS_NOT_CHECKED = ("anchors_not_checked", ("warning", "info"),
                           "anchors were not asked about (--offline, or other chains)")
    OUTSIDE_ANCHORED_RANGE = ("outside_anchored_range", _W,
                              "verified entries no verified anchor covers yet")
    SEQUENCE_GAP = ("sequence_gap", _W, "missing sequence numbers")
    CLOCK_FUTURE = ("clock_future", _W, "sample times later than their anchor, or than now")
    CLOCK_PAST = ("clock_past", _W, "sample times before enrollment or 2020: clock not set")
    CLOCK_BACKWARDS = ("clock_backwards", _W, "sample time went down within a boot")
    BOOT_BACKWARDS = ("boot_backwards", _W, "the boot counter went down as seq went up")
    OUT_OF_SCOPE = ("out_of_scope", _W, "a gateway enrolled for another farm/field")
    NO_READINGS = ("no_readings", _W, "nothing verified for this scope and period")
    COMPLETENESS_UNPROVEN = ("completeness_unproven", _W,
                             "the bundle carries no completeness claim")
    SEAL_INVALID = ("seal_invalid", _E, "the log's completeness seal does not check out")
    SEAL_CLAIM_MISMATCH = ("seal_claim_mismatch", _E,
                           "the exporter's completeness claim contradicts the log's seal")
    SEAL_CONTRADICTED = ("seal_contradicted", _E, "the bundle contradicts the log's seal")
    COMPLETENESS_NOT_PROVABLE = ("completeness_not_provable", ("warning", "error"),
                                 "no seal of the log proves the bundle complete")
    DELIVERED_LATE = ("delivered_late", _I, "samples anchored more than 30 days after sampling")
    LOG_KEY_DIFFERS = ("log_key_differs", _I, "the bundle names another key than the pinned one")

    # -- only in a verification of several bundles (docs/bundle.md §11)
    CONFLICTING_MESSAGE = ("conflicting_message", _E,
                           "one gateway seq is a different signed message in two logs")
    GATEWAY_KEY_MISMATCH = ("gateway_key_mismatch", _E,
                            "a gateway is enrolled with unrelated keys in two logs")
    LOG_MISSING = ("log_missing", _E, "a pinned key or known checkpoint's log has no bundle")
    LOG_NOT_PINNED = ("log_not_pinned", _E, "keys were pinned, none for this bundle's log")
    SCOPE_MISMATCH = ("scope_mismatch", _W, "the bundles were exported for different scopes")
    LOGGED_TWICE = ("logged_twice", _I, "the identical message is in two logs; it counts once")
