"""Trust policies (inspector/policy.py, the Sigsum policy file format) over real signed
checkpoints: the log's Ed25519 note signature and witnesses' cosignature/v1 lines made with
fresh keys, verified by the same code that checks the collector's witnesses."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint
from fieldproof.formats.cosignature import (
    CosignatureVerifier,
    cosigned_message,
    verify_cosignature_line,
)
from fieldproof.formats.note import Ed25519Signer, add_signature_lines, generate_key
from inspector.policy import MAX_LINES, MAX_POLICY_BYTES, Policy, PolicyError

ORIGIN = "fieldproof.example/log/c1"


class Witness:
    """A witness key that cosigns checkpoints (cosignature/v1)."""

    def __init__(self, name: str) -> None:
        self.key = Ed25519PrivateKey.generate()
        pub = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = CosignatureVerifier(name, pub)
        self.vkey = self.verifier.vkey
        self.hex = pub.hex()

    def cosign(self, note: bytes) -> str:
        body = note[: note.rfind(b"\n\n") + 1]
        ts = int(time.time())
        sig = self.key.sign(cosigned_message(ts, body))
        raw = self.verifier.key_id.to_bytes(4, "big") + ts.to_bytes(8, "big") + sig
        line = f"\u2014 {self.verifier.name} {base64.b64encode(raw).decode()}"
        verify_cosignature_line(line, body, self.verifier)  # a line the real verifier accepts
        return line


@pytest.fixture(scope="module")
def log_key() -> Ed25519Signer:
    return generate_key(ORIGIN)


@pytest.fixture(scope="module")
def ws() -> dict[str, Witness]:
    return {n: Witness(f"w.example/{n}") for n in ("X1", "X2", "X3", "Y1", "Y2", "Y3")}


def checkpoint_note(log_key: Ed25519Signer, size: int = 42) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, bytes(range(32))), log_key)


def cosigned(log_key: Ed25519Signer, *witnesses: Witness) -> bytes:
    note = checkpoint_note(log_key)
    return add_signature_lines(note, [w.cosign(note) for w in witnesses])


def sigsum_example(log_vkey: str, ws: dict[str, Witness]) -> str:
    """The example policy of sigsum-go doc/policy.md, with real keys."""
    return f"""# two organisations' witnesses
log {log_vkey}
witness X1 {ws["X1"].vkey}
witness X2 {ws["X2"].vkey}
witness X3 {ws["X3"].vkey} https://x3.example/witness
group X-witnesses 2 X1 X2 X3

witness Y1 {ws["Y1"].vkey}
witness Y2 {ws["Y2"].vkey}
witness\tY3\t{ws["Y3"].vkey}   # tabs and trailing comments are allowed
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_nested_groups_quorum_met_and_not_met(
    log_key: Ed25519Signer, ws: dict[str, Witness]
) -> None:
    policy = Policy.parse(sigsum_example(log_key.verifier().vkey, ws))
    assert len(policy.logs) == 1 and policy.witnesses["X3"].url == "https://x3.example/witness"

    met = policy.evaluate(cosigned(log_key, ws["X1"], ws["X3"], ws["Y2"]))
    assert met.ok and met.quorum == "X-and-Y" and met.problem is None
    assert met.checkpoint is not None and met.checkpoint.size == 42
    assert met.signed == ("X1", "X3", "Y2")
    assert met.missing == ("X2", "Y1", "Y3")
    assert met.groups_met == ("X-witnesses", "Y-witnesses", "X-and-Y")

    # two X witnesses but no Y: the inner X group is met, the quorum is not
    short = policy.evaluate(cosigned(log_key, ws["X1"], ws["X2"]))
    assert short.problem is None and not short.quorum_met and not short.ok
    assert short.groups_met == ("X-witnesses",)
    assert short.missing == ("X3", "Y1", "Y2", "Y3")

    # one X is not two
    one_x = policy.evaluate(cosigned(log_key, ws["X1"], ws["Y1"], ws["Y2"], ws["Y3"]))
    assert not one_x.quorum_met and one_x.groups_met == ("Y-witnesses",)


@pytest.mark.parametrize(
    ("threshold", "signers", "met"),
    [
        ("all", ("X1", "X2", "X3"), True),
        ("all", ("X1", "X2"), False),
        ("any", ("X3",), True),
        ("any", (), False),
        ("2", ("X2", "X3"), True),
        ("2", ("X2",), False),
        ("3", ("X1", "X2", "X3"), True),
    ],
)
def test_k_of_n_groups(
    log_key: Ed25519Signer,
    ws: dict[str, Witness],
    threshold: str,
    signers: tuple[str, ...],
    met: bool,
) -> None:
    text = f"log {log_key.verifier().vkey}\n"
    text += "".join(f"witness {n} {ws[n].vkey}\n" for n in ("X1", "X2", "X3"))
    text += f"group g {threshold} X1 X2 X3\nquorum g\n"
    result = Policy.parse(text).evaluate(cosigned(log_key, *(ws[n] for n in signers)))
    assert result.quorum_met is met and result.signed == signers


def test_single_witness_and_none_quorums(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    log = log_key.verifier().vkey
    single = Policy.parse(f"log {log}\nwitness X1 {ws['X1'].vkey}\nquorum X1\n")
    assert single.evaluate(cosigned(log_key, ws["X1"])).ok
    assert not single.evaluate(checkpoint_note(log_key)).quorum_met
    nobody = Policy.parse(f"log {log}\nwitness X1 {ws['X1'].vkey}\nquorum none\n")
    plain = nobody.evaluate(checkpoint_note(log_key))
    assert plain.ok and plain.signed == () and plain.missing == ("X1",)


def test_bad_cosignature_is_not_counted(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    policy = Policy.parse(sigsum_example(log_key.verifier().vkey, ws))
    note = checkpoint_note(log_key)
    other = checkpoint_note(log_key, size=43)
    # Y1's cosignature of another checkpoint: its name and key ID, a signature that fails here
    lines = [ws["X1"].cosign(note), ws["X2"].cosign(note), ws["Y1"].cosign(other)]
    result = policy.evaluate(add_signature_lines(note, lines))
    assert result.problem is None and not result.quorum_met
    assert result.signed == ("X1", "X2") and result.invalid == ("Y1",)
    assert "Y1" in result.missing


def test_unknown_witness_is_ignored(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    policy = Policy.parse(f"log {log_key.verifier().vkey}\nwitness X1 {ws['X1'].vkey}\nquorum X1\n")
    stranger = Witness("w.example/stranger")
    # the stranger even reuses X1's name: its key ID differs, so it is not X1
    impostor = Witness("w.example/X1")
    result = policy.evaluate(cosigned(log_key, stranger, impostor))
    assert result.problem is None and not result.quorum_met
    assert result.signed == () and result.invalid == () and result.unknown_signatures == 2
    assert policy.evaluate(cosigned(log_key, stranger, ws["X1"])).ok


def test_log_signature_is_required(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    policy = Policy.parse(
        f"log {log_key.verifier().vkey}\nwitness X1 {ws['X1'].vkey}\nquorum none\n"
    )
    other_log = generate_key(ORIGIN)  # same origin, another key: not this policy's log
    result = policy.evaluate(cosigned(other_log, ws["X1"]))
    assert result.checkpoint is None and not result.ok
    assert result.problem is not None and "not signed by any log of the policy" in result.problem
    # a changed body: the log's signature fails
    note = cosigned(log_key, ws["X1"]).replace(b"\n42\n", b"\n43\n", 1)
    tampered = policy.evaluate(note)
    assert tampered.problem is not None and "does not verify" in tampered.problem
    for junk in (b"", b"no blank line", b"\xff\xfe\n\n\xff\n", b"a\n\n" * 10_000):
        assert policy.evaluate(junk).problem is not None


def test_sigsum_hex_keys(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    """Sigsum's own key form: a hex log key signs under the checkpoint origin, a hex witness
    key cosigns under its policy name (Appendix A of sigsum-go doc/policy.md)."""
    log_hex = log_key.verifier().public_key.hex()
    text = f"log {log_hex}\nwitness w.example/X1 {ws['X1'].hex}\nquorum w.example/X1\n"
    result = Policy.parse(text).evaluate(cosigned(log_key, ws["X1"]))
    assert result.ok and result.signed == ("w.example/X1",)
    # under another name, the hex key is another cosigner: X1's line does not match it
    text2 = f"log {log_hex}\nwitness X1 {ws['X1'].hex}\nquorum X1\n"
    assert not Policy.parse(text2).evaluate(cosigned(log_key, ws["X1"])).quorum_met


def test_malformed_policies_name_the_line(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    log = f"log {log_key.verifier().vkey}"
    w1 = f"witness X1 {ws['X1'].vkey}"
    w2 = f"witness X2 {ws['X2'].vkey}"
    cases = [
        (f"{log}\nwitnes X1 {ws['X1'].vkey}\nquorum none\n", 2, "unknown keyword"),
        (f"{log}\nquorum X1\n{w1}\n", 2, "earlier line"),
        (f"{log}\n{w1}\ngroup g any X1 X9\nquorum g\n", 3, "'X9'"),
        (f"{log}\n{w1}\nwitness X1 {ws['X2'].vkey}\nquorum X1\n", 3, "already defined"),
        (f"{log}\n{w1}\nwitness X9 {ws['X1'].vkey}\nquorum X1\n", 3, "already listed"),
        (f"{log}\n{log}\nquorum none\n", 2, "duplicate logs"),
        (f"{log}\n{w1}\n{w2}\ngroup g 3 X1 X2\nquorum g\n", 4, "between 1 and the 2"),
        (f"{log}\n{w1}\n{w2}\ngroup g 0 X1 X2\nquorum g\n", 4, "between 1"),
        (f"{log}\n{w1}\n{w2}\ngroup g -1 X1 X2\nquorum g\n", 4, "not all, any"),
        (f"{log}\n{w1}\ngroup g any X1 X1\nquorum g\n", 3, "member of a group"),
        (f"{log}\n{w1}\ngroup g any X1\ngroup h any X1\nquorum h\n", 4, "member of a group"),
        (f"{log}\n{w1}\ngroup g any none\nquorum g\n", 3, "'none'"),
        (f"{log}\n{w1}\ngroup g any\nquorum g\n", 3, "group line is"),
        (f"{log}\n{w1}\nquorum X1\nquorum none\n", 4, "second quorum"),
        (f"{log}\n{w1}\nquorum X1 X1\n", 3, "quorum line is"),
        (f"{log}\nwitness none {ws['X1'].vkey}\nquorum none\n", 2, "already defined"),
        (f"{log}\nwitness X1 {ws['X1'].vkey} ftp://x\nquorum none\n", 2, "http"),
        (f"{log}\nwitness X1 {log_key.verifier().vkey}\nquorum none\n", 2, "type 0x04"),
        (f"log {ws['X1'].vkey}\nquorum none\n", 1, "type 0x01"),
        (f"log {'ab' * 31}\nquorum none\n", 1, "neither"),
        (f"{log}\nwitness X1 {ws['X1'].vkey[:-2]}\nquorum none\n", 2, "witness key"),
        (f"{log}\nwitness X+1 {ws['X1'].hex}\nquorum none\n", 2, "key name"),
        (f"{log}\r\nquorum none\n", 1, "LF line endings"),
        (f"{log}\n\x00\nquorum none\n", 2, "control character"),
        (f"{log}\n{'#' * 5000}\nquorum none\n", 2, "longer than"),
    ]
    for text, line, fragment in cases:
        with pytest.raises(PolicyError) as exc:
            Policy.parse(text)
        assert f"policy line {line}:" in str(exc.value), text
        assert fragment in str(exc.value), (text, str(exc.value))


def test_policy_wide_mistakes_and_bounds(log_key: Ed25519Signer, ws: dict[str, Witness]) -> None:
    log = f"log {log_key.verifier().vkey}"
    for text, fragment in [
        (f"witness X1 {ws['X1'].vkey}\nquorum X1\n", "no log"),
        (f"{log}\nwitness X1 {ws['X1'].vkey}\n", "no quorum"),
        ("", "no log"),
        ("\n" * (MAX_LINES + 1), f"over the {MAX_LINES}"),
        ("#" * (MAX_POLICY_BYTES + 1), "limit"),
    ]:
        with pytest.raises(PolicyError, match=fragment):
            Policy.parse(text)
    with pytest.raises(PolicyError, match="not UTF-8"):
        Policy.parse(log.encode() + b"\n\xff\n")
    with pytest.raises(PolicyError, match="limit"):
        Policy.parse(b"#" * (MAX_POLICY_BYTES + 1))
    with pytest.raises(PolicyError, match="text"):
        Policy.parse(42)  # type: ignore[arg-type]
    # a long but legal chain of nested groups evaluates in one pass
    text = f"{log}\nwitness X1 {ws['X1'].vkey}\ngroup g0 any X1\n"
    text += "".join(f"group g{i} any g{i - 1}\n" for i in range(1, 200))
    deep = Policy.parse(text + "quorum g199\n")
    assert deep.evaluate(cosigned(log_key, ws["X1"])).ok
    assert not deep.evaluate(checkpoint_note(log_key)).quorum_met
    assert deep.describe() == "1 log(s), 1 witness(es), 200 group(s), quorum group g199"
