"""VeChainThor transaction codec: build, sign, encode, decode and check Thor transactions.

Written on ``rlp`` + ``coincurve`` + ``hashlib.blake2b`` because ``vechain-thor-devkit`` pins old
eth-abi/eth-keys and cannot be installed beside web3. Proven byte for byte by the official vectors
in ``shared/vectors/thor`` (tests/anchor/test_thor_vectors.py).

The rules, as in github.com/vechain/thor ``tx/``:

* legacy tx = RLP list ``[chainTag, blockRef, expiration, clauses, gasPriceCoef, gas, dependsOn,
  nonce, reserved, signature]``; dynamic-fee tx (type 0x51) = ``0x51 ‖ RLP[chainTag, blockRef,
  expiration, clauses, maxPriorityFeePerGas, maxFeePerGas, gas, dependsOn, nonce, reserved,
  signature]``. Integers are minimal big-endian (blockRef is a uint64 too); ``to``/``dependsOn``
  are empty when absent; reserved = ``[features, *unused]`` with trailing empty items trimmed.
* signing hash = blake2b-256 of the unsigned encoding (type byte prefixed for typed txs).
* signature = 65 bytes secp256k1 ``r ‖ s ‖ v`` (v = recovery id 0/1) over the signing hash.
* VIP-191 (features bit 1): the gas payer signs blake2b-256(signing hash ‖ origin address); the
  tx signature is origin sig ‖ payer sig (130 bytes).
* tx id = blake2b-256(signing hash ‖ origin address).
* intrinsic gas = 5000 + per clause 16000 (48000 if it creates a contract) + 4 per zero data byte
  + 68 per non-zero data byte; a tx without clauses costs 5000 + 16000.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import coincurve
import rlp
from eth_hash.auto import keccak

from fieldproof.errors import FormatError

TYPE_LEGACY = 0x00
TYPE_DYNAMIC_FEE = 0x51
DELEGATION_FEATURE = 1

TX_GAS = 5000
CLAUSE_GAS = 16000
CLAUSE_GAS_CONTRACT_CREATION = 48000
DATA_GAS_ZERO = 4
DATA_GAS_NONZERO = 68

MAX_UNUSED_RESERVED = 2
MAX_CLAUSES = 2500
SIGNATURE_SIZE = 65

# secp256k1 group order and its half: signatures with s > n/2 are malleable and the node
# rejects them ("invalid signature: S value is out of range").
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2

RLPItem: TypeAlias = bytes | list["RLPItem"]


class ThorTxError(FormatError):
    """A Thor transaction could not be built, encoded, decoded or verified."""


class TxEncodeError(ThorTxError):
    """A transaction field is out of range or of the wrong shape; the message names the field."""


class TxDecodeError(ThorTxError):
    """Raw bytes are not a canonical Thor transaction encoding."""


class SignatureError(ThorTxError):
    """A signature is malformed or no public key can be recovered from it."""


class InvalidPrivateKey(ThorTxError):
    """Key bytes are not a secp256k1 private key. The message never contains the key."""


# --------------------------------------------------------------------------- primitives


def blake2b256(*parts: bytes) -> bytes:
    """Thor's hash function: BLAKE2b with a 32-byte digest over the concatenated parts."""
    h = hashlib.blake2b(digest_size=32)
    for p in parts:
        h.update(p)
    return h.digest()


def address_from_public_key(public_key: bytes) -> bytes:
    """20-byte account address: last 20 bytes of keccak-256 of the uncompressed point (no 0x04)."""
    if len(public_key) == 65 and public_key[0] == 4:
        public_key = public_key[1:]
    elif len(public_key) == 33:
        public_key = coincurve.PublicKey(public_key).format(compressed=False)[1:]
    if len(public_key) != 64:
        raise ThorTxError(f"public key must be 33, 64 or 65 bytes, got {len(public_key)}")
    return bytes(keccak(public_key))[12:]


def _private_key(secret: bytes) -> coincurve.PrivateKey:
    if not isinstance(secret, bytes | bytearray) or len(secret) != 32:
        raise InvalidPrivateKey("a secp256k1 private key must be exactly 32 bytes")
    if not 0 < int.from_bytes(secret, "big") < SECP256K1_N:
        raise InvalidPrivateKey("private key is not a valid secp256k1 scalar (must be 1..n-1)")
    try:
        return coincurve.PrivateKey(bytes(secret))
    except Exception:  # pragma: no cover - range checked above
        raise InvalidPrivateKey("private key rejected by libsecp256k1") from None


def address_of(private_key: bytes) -> bytes:
    """Account address (20 bytes) controlled by a private key."""
    return address_from_public_key(_private_key(private_key).public_key.format(compressed=False))


def sign_hash(msg_hash: bytes, private_key: bytes) -> bytes:
    """Deterministic (RFC 6979), low-S, recoverable signature ``r ‖ s ‖ v`` over a 32-byte hash."""
    if len(msg_hash) != 32:
        raise ThorTxError(f"message hash must be 32 bytes, got {len(msg_hash)}")
    sig: bytes = _private_key(private_key).sign_recoverable(msg_hash, hasher=None)
    return sig


def recover_address(msg_hash: bytes, signature: bytes) -> bytes:
    """Address whose key made ``signature`` over ``msg_hash``; errors read like the node's."""
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError("invalid signature length")
    if signature[64] >= 4:
        raise SignatureError("invalid signature recovery id")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(signature, msg_hash, hasher=None)
    except Exception:
        raise SignatureError("recovery failed") from None
    return address_from_public_key(pub.format(compressed=False))


def is_low_s(signature: bytes) -> bool:
    """True if the 65-byte signature's s is at most n/2 (the node rejects the others)."""
    return int.from_bytes(signature[32:64], "big") <= SECP256K1_HALF_N


class SecretKey:
    """A chain private key that never shows itself: repr/str give only the address.

    Keeps keys out of logs and exception text by construction; call ``secret_bytes()`` only at
    the point of signing.
    """

    __slots__ = ("_address", "_secret")

    def __init__(self, secret: bytes) -> None:
        _private_key(secret)
        self._secret = bytes(secret)
        self._address = address_of(self._secret)

    @property
    def address(self) -> bytes:
        return self._address

    @property
    def address_hex(self) -> str:
        return "0x" + self._address.hex()

    def secret_bytes(self) -> bytes:
        return self._secret

    def sign(self, msg_hash: bytes) -> bytes:
        return sign_hash(msg_hash, self._secret)

    def __repr__(self) -> str:
        return f"SecretKey(address={self.address_hex})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and hmac.compare_digest(other._secret, self._secret)

    def __hash__(self) -> int:
        return hash(self._address)


# --------------------------------------------------------------------------- value parsing


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def parse_hex(value: str | bytes, name: str) -> bytes:
    """Bytes from ``0x``-prefixed (or bare) hex, or bytes passed through."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise TxEncodeError(f"{name}: expected hex string, got {type(value).__name__}")
    s = value[2:] if value[:2].lower() == "0x" else value
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise TxEncodeError(f"{name}: {value!r} is not valid hex") from None


def _parse_uint(value: Any, name: str, bits: int) -> int:
    if isinstance(value, bool):
        raise TxEncodeError(f"{name}: expected an integer, got a bool")
    if isinstance(value, str):
        try:
            n = int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
        except ValueError:
            raise TxEncodeError(f"{name}: {value!r} is not a decimal or 0x-hex integer") from None
    elif isinstance(value, int):
        n = value
    else:
        raise TxEncodeError(f"{name}: expected an integer, got {type(value).__name__}")
    if n < 0 or n.bit_length() > bits:
        raise TxEncodeError(f"{name}: {n} is outside 0..2^{bits}-1")
    return n


def _parse_fixed(value: Any, name: str, size: int) -> bytes:
    b = parse_hex(value, name)
    if len(b) != size:
        raise TxEncodeError(f"{name}: must be {size} bytes, got {len(b)}")
    return b


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Clause:
    """One call in a transaction: ``to`` (None creates a contract), VET ``value`` in wei, data."""

    to: bytes | None
    value: int = 0
    data: bytes = b""

    def __post_init__(self) -> None:
        if self.to is not None and len(self.to) != 20:
            raise TxEncodeError(f"clause.to: must be 20 bytes, got {len(self.to)}")
        if self.value < 0 or self.value.bit_length() > 256:
            raise TxEncodeError("clause.value: outside 0..2^256-1")

    @classmethod
    def from_body(cls, c: Mapping[str, Any]) -> Clause:
        to = c.get("to")
        return cls(
            to=None if to is None else _parse_fixed(to, "clause.to", 20),
            value=_parse_uint(c.get("value", 0), "clause.value", 256),
            data=parse_hex(c.get("data", "0x") or "0x", "clause.data"),
        )

    def to_body(self) -> dict[str, Any]:
        return {
            "to": None if self.to is None else "0x" + self.to.hex(),
            "value": self.value,
            "data": "0x" + self.data.hex(),
        }

    def rlp_item(self) -> list[RLPItem]:
        return [self.to or b"", _int_bytes(self.value), self.data]


def intrinsic_gas(clauses: Sequence[Clause]) -> int:
    """Gas the node charges before execution; a tx's ``gas`` must be at least this."""
    if not clauses:
        return TX_GAS + CLAUSE_GAS
    total = TX_GAS
    for c in clauses:
        zeros = c.data.count(0)
        total += DATA_GAS_ZERO * zeros + DATA_GAS_NONZERO * (len(c.data) - zeros)
        total += CLAUSE_GAS_CONTRACT_CREATION if c.to is None else CLAUSE_GAS
    return total


def _reserved_item(features: int, unused: Sequence[RLPItem]) -> list[RLPItem]:
    items: list[RLPItem] = [_int_bytes(features), *unused]
    while items and items[-1] in (b"", []):
        items.pop()
    return items


@dataclass(frozen=True)
class Transaction:
    """A Thor transaction, legacy (type 0) or dynamic-fee (type 0x51), signed or not."""

    chain_tag: int
    block_ref: bytes
    expiration: int
    clauses: tuple[Clause, ...]
    gas: int
    nonce: int
    tx_type: int = TYPE_LEGACY
    gas_price_coef: int = 0
    max_fee_per_gas: int = 0
    max_priority_fee_per_gas: int = 0
    depends_on: bytes | None = None
    features: int = 0
    unused_reserved: tuple[RLPItem, ...] = ()
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clauses", tuple(self.clauses))
        object.__setattr__(self, "unused_reserved", tuple(self.unused_reserved))
        if self.tx_type not in (TYPE_LEGACY, TYPE_DYNAMIC_FEE):
            raise TxEncodeError(f"type: {self.tx_type} is not 0 (legacy) or 81 (dynamic fee)")
        checks: list[tuple[str, int, int]] = [
            ("chainTag", self.chain_tag, 8),
            ("expiration", self.expiration, 32),
            ("gas", self.gas, 64),
            ("nonce", self.nonce, 64),
            ("gasPriceCoef", self.gas_price_coef, 8),
            ("maxFeePerGas", self.max_fee_per_gas, 256),
            ("maxPriorityFeePerGas", self.max_priority_fee_per_gas, 256),
            ("reserved.features", self.features, 32),
        ]
        for name, value, bits in checks:
            if not isinstance(value, int) or value < 0 or value.bit_length() > bits:
                raise TxEncodeError(f"{name}: {value!r} is outside 0..2^{bits}-1")
        if len(self.block_ref) != 8:
            raise TxEncodeError(f"blockRef: must be 8 bytes, got {len(self.block_ref)}")
        if self.depends_on is not None and len(self.depends_on) != 32:
            raise TxEncodeError(f"dependsOn: must be 32 bytes, got {len(self.depends_on)}")
        if len(self.unused_reserved) > MAX_UNUSED_RESERVED:
            raise TxEncodeError(f"reserved: at most {MAX_UNUSED_RESERVED} unused fields")

    # ---- construction from / to the devkit dict form

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Transaction:
        """Build from the thor-devkit dict form used in tx_vectors.json (see SOURCE.md there)."""
        try:
            tx_type = _parse_uint(body.get("type", TYPE_LEGACY) or 0, "type", 8)
            reserved = body.get("reserved") or {}
            depends = body.get("dependsOn")
            clauses = tuple(Clause.from_body(c) for c in body.get("clauses", []))
            kwargs: dict[str, Any] = {
                "tx_type": tx_type,
                "chain_tag": _parse_uint(body["chainTag"], "chainTag", 8),
                "block_ref": _parse_fixed(body["blockRef"], "blockRef", 8),
                "expiration": _parse_uint(body["expiration"], "expiration", 32),
                "clauses": clauses,
                "gas": _parse_uint(body["gas"], "gas", 64),
                "nonce": _parse_uint(body["nonce"], "nonce", 64),
                "depends_on": None if depends is None else _parse_fixed(depends, "dependsOn", 32),
                "features": _parse_uint(reserved.get("features") or 0, "reserved.features", 32),
                "unused_reserved": tuple(reserved.get("unused") or ()),
            }
            if tx_type == TYPE_DYNAMIC_FEE:
                kwargs["max_fee_per_gas"] = _parse_uint(body["maxFeePerGas"], "maxFeePerGas", 256)
                kwargs["max_priority_fee_per_gas"] = _parse_uint(
                    body["maxPriorityFeePerGas"], "maxPriorityFeePerGas", 256
                )
            else:
                kwargs["gas_price_coef"] = _parse_uint(body["gasPriceCoef"], "gasPriceCoef", 8)
        except KeyError as e:
            raise TxEncodeError(f"tx body is missing field {e.args[0]!r}") from None
        return cls(**kwargs)

    def to_body(self) -> dict[str, Any]:
        """The devkit dict form; ``Transaction.from_body(tx.to_body()) == tx`` minus signature."""
        body: dict[str, Any] = {}
        if self.tx_type != TYPE_LEGACY:
            body["type"] = self.tx_type
        body.update(
            {
                "chainTag": self.chain_tag,
                "blockRef": "0x" + self.block_ref.hex(),
                "expiration": self.expiration,
                "clauses": [c.to_body() for c in self.clauses],
            }
        )
        if self.tx_type == TYPE_DYNAMIC_FEE:
            body["maxFeePerGas"] = self.max_fee_per_gas
            body["maxPriorityFeePerGas"] = self.max_priority_fee_per_gas
        else:
            body["gasPriceCoef"] = self.gas_price_coef
        body["gas"] = self.gas
        body["dependsOn"] = None if self.depends_on is None else "0x" + self.depends_on.hex()
        body["nonce"] = self.nonce
        if self.features or self.unused_reserved:
            body["reserved"] = {"features": self.features, "unused": list(self.unused_reserved)}
        return body

    # ---- encoding

    def _signing_fields(self) -> list[RLPItem]:
        fields: list[RLPItem] = [
            _int_bytes(self.chain_tag),
            _int_bytes(int.from_bytes(self.block_ref, "big")),
            _int_bytes(self.expiration),
            [c.rlp_item() for c in self.clauses],
        ]
        if self.tx_type == TYPE_DYNAMIC_FEE:
            fields += [_int_bytes(self.max_priority_fee_per_gas), _int_bytes(self.max_fee_per_gas)]
        else:
            fields.append(_int_bytes(self.gas_price_coef))
        fields += [
            _int_bytes(self.gas),
            self.depends_on or b"",
            _int_bytes(self.nonce),
            _reserved_item(self.features, self.unused_reserved),
        ]
        return fields

    def _envelope(self, items: list[RLPItem]) -> bytes:
        payload: bytes = rlp.encode(items)
        return payload if self.tx_type == TYPE_LEGACY else bytes([self.tx_type]) + payload

    def signing_payload(self) -> bytes:
        """The unsigned encoding (``unsigned_encoded`` in the vectors); its hash is signed."""
        return self._envelope(self._signing_fields())

    def signing_hash(self) -> bytes:
        return blake2b256(self.signing_payload())

    def encode(self) -> bytes:
        """Canonical wire bytes (what ``POST /transactions`` takes as ``raw``)."""
        return self._envelope([*self._signing_fields(), self.signature])

    @property
    def size(self) -> int:
        return len(self.encode())

    # ---- derived facts

    @property
    def delegated(self) -> bool:
        return bool(self.features & DELEGATION_FEATURE)

    @property
    def block_ref_number(self) -> int:
        """Block number the tx refers to: the first 4 bytes of blockRef."""
        return int.from_bytes(self.block_ref[:4], "big")

    def is_expired(self, block_number: int) -> bool:
        """True if the tx can no longer be included in a block with this number."""
        return block_number > self.block_ref_number + self.expiration

    def intrinsic_gas(self) -> int:
        return intrinsic_gas(self.clauses)

    def _check_signature_length(self) -> None:
        want = 2 * SIGNATURE_SIZE if self.delegated else SIGNATURE_SIZE
        if len(self.signature) != want:
            raise SignatureError("invalid signature length")

    def origin(self) -> bytes:
        """Sender address recovered from the (first) signature."""
        self._check_signature_length()
        return recover_address(self.signing_hash(), self.signature[:SIGNATURE_SIZE])

    def delegator_signing_hash(self, origin: bytes) -> bytes:
        """What a VIP-191 gas payer signs for this origin (equals the tx id)."""
        return blake2b256(self.signing_hash(), origin)

    def delegator(self) -> bytes | None:
        """VIP-191 gas payer recovered from the second signature; None if not delegated."""
        self._check_signature_length()
        if not self.delegated:
            return None
        origin = self.origin()
        return recover_address(self.delegator_signing_hash(origin), self.signature[SIGNATURE_SIZE:])

    def id(self) -> bytes:
        """Tx id = blake2b-256(signing hash ‖ origin)."""
        return blake2b256(self.signing_hash(), self.origin())

    def id_hex(self) -> str:
        return "0x" + self.id().hex()

    def has_low_s(self) -> bool:
        """True if every signature in the tx has s ≤ n/2 (the node rejects the others)."""
        self._check_signature_length()
        sigs = [self.signature[i : i + SIGNATURE_SIZE] for i in range(0, len(self.signature), 65)]
        return all(is_low_s(s) for s in sigs)

    def with_signature(self, signature: bytes) -> Transaction:
        return replace(self, signature=bytes(signature))


# --------------------------------------------------------------------------- signing


def sign_transaction(
    tx: Transaction, private_key: bytes, gas_payer_key: bytes | None = None
) -> Transaction:
    """Sign as origin; with ``gas_payer_key`` also sign as VIP-191 gas payer.

    A gas payer key turns the delegation feature on (a payer signature means nothing without
    it); a delegated tx without a payer key is refused, since the node would reject it.
    """
    if gas_payer_key is not None and not tx.delegated:
        tx = replace(tx, features=tx.features | DELEGATION_FEATURE)
    if tx.delegated and gas_payer_key is None:
        raise ThorTxError(
            "tx is marked delegated (reserved.features bit 1) but no gas payer key was given; "
            "pass the sponsor's key or clear the feature"
        )
    h = tx.signing_hash()
    sig = sign_hash(h, private_key)
    if gas_payer_key is not None:
        origin = address_of(private_key)
        sig += sign_hash(blake2b256(h, origin), gas_payer_key)
    return tx.with_signature(sig)


def sign_body(
    body: dict[str, Any], private_key: bytes, gas_payer_key: bytes | None = None
) -> tuple[bytes, str]:
    """Sign a devkit-form tx body; returns (raw signed tx bytes, tx id as ``0x…`` hex)."""
    tx = sign_transaction(Transaction.from_body(body), private_key, gas_payer_key)
    return tx.encode(), tx.id_hex()


# --------------------------------------------------------------------------- decoding


def _dec_uint(item: RLPItem, name: str, bits: int) -> int:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"rlp: expected input string or byte for {name}")
    if item[:1] == b"\x00":
        raise TxDecodeError(f"rlp: non-canonical integer (leading zero bytes) for {name}")
    n = int.from_bytes(item, "big")
    if n.bit_length() > bits:
        raise TxDecodeError(f"rlp: input string too long for {name} ({bits} bits)")
    return n


def _dec_optional_fixed(item: RLPItem, name: str, size: int) -> bytes | None:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"rlp: expected input string for {name}")
    if item == b"":
        return None
    if len(item) != size:
        raise TxDecodeError(f"rlp: {name} must be empty or {size} bytes, got {len(item)}")
    return item


def _dec_clause(item: RLPItem, i: int) -> Clause:
    if not isinstance(item, list):
        raise TxDecodeError(f"rlp: expected input list for clause {i}")
    if len(item) != 3:
        raise TxDecodeError(f"rlp: clause {i} has {len(item)} elements, expected 3")
    to, value, data = item
    if not isinstance(data, bytes):
        raise TxDecodeError(f"rlp: expected input string for clause {i} data")
    return Clause(
        _dec_optional_fixed(to, f"clause {i} to", 20),
        _dec_uint(value, f"clause {i} value", 256),
        data,
    )


def decode(raw: bytes) -> Transaction:
    """Parse canonical wire bytes (legacy or 0x51) into a Transaction, as strictly as the node.

    Refuses non-canonical RLP, wrong element counts, oversized integers, wrong-length
    addresses/hashes, untrimmed reserved fields and unknown tx types. Signatures are not
    checked here; call ``origin()`` / ``delegator()``.
    """
    raw = bytes(raw)
    if not raw:
        raise TxDecodeError("empty transaction")
    if raw[0] > 0x7F:
        tx_type, payload = TYPE_LEGACY, raw
    else:
        if len(raw) <= 1:
            raise TxDecodeError("typed transaction too short")
        if raw[0] != TYPE_DYNAMIC_FEE:
            raise TxDecodeError("transaction type not supported")
        tx_type, payload = raw[0], raw[1:]
    try:
        items = rlp.decode(payload, strict=True)
    except rlp.exceptions.RLPException as e:
        raise TxDecodeError(f"rlp: {e}") from None
    if not isinstance(items, list):
        raise TxDecodeError("rlp: expected input list for transaction")
    want = 11 if tx_type == TYPE_DYNAMIC_FEE else 10
    if len(items) != want:
        raise TxDecodeError(f"rlp: transaction has {len(items)} elements, expected {want}")
    it: Iterator[RLPItem] = iter(items)
    chain_tag = _dec_uint(next(it), "chainTag", 8)
    block_ref = _dec_uint(next(it), "blockRef", 64).to_bytes(8, "big")
    expiration = _dec_uint(next(it), "expiration", 32)
    clause_items = next(it)
    if not isinstance(clause_items, list):
        raise TxDecodeError("rlp: expected input list for clauses")
    if len(clause_items) > MAX_CLAUSES:
        raise TxDecodeError(f"clause count exceeds limit: {len(clause_items)} > {MAX_CLAUSES}")
    clauses = tuple(_dec_clause(c, i) for i, c in enumerate(clause_items))
    fees: dict[str, int] = {}
    if tx_type == TYPE_DYNAMIC_FEE:
        fees["max_priority_fee_per_gas"] = _dec_uint(next(it), "maxPriorityFeePerGas", 256)
        fees["max_fee_per_gas"] = _dec_uint(next(it), "maxFeePerGas", 256)
    else:
        fees["gas_price_coef"] = _dec_uint(next(it), "gasPriceCoef", 8)
    gas = _dec_uint(next(it), "gas", 64)
    depends_on = _dec_optional_fixed(next(it), "dependsOn", 32)
    nonce = _dec_uint(next(it), "nonce", 64)
    reserved = next(it)
    if not isinstance(reserved, list):
        raise TxDecodeError("rlp: expected input list for reserved")
    if len(reserved) > MAX_UNUSED_RESERVED + 1:
        raise TxDecodeError(
            f"reserved field count exceeds limit: {len(reserved) - 1} > {MAX_UNUSED_RESERVED}"
        )
    if reserved and reserved[-1] in (b"", []):
        raise TxDecodeError("invalid reserved fields: not trimmed")
    features = _dec_uint(reserved[0], "reserved.features", 32) if reserved else 0
    signature = next(it)
    if not isinstance(signature, bytes):
        raise TxDecodeError("rlp: expected input string for signature")
    return Transaction(
        tx_type=tx_type,
        chain_tag=chain_tag,
        block_ref=block_ref,
        expiration=expiration,
        clauses=clauses,
        gas=gas,
        nonce=nonce,
        depends_on=depends_on,
        features=features,
        unused_reserved=tuple(reserved[1:]),
        signature=signature,
        **fees,
    )
