"""The signed payload: gateway id, sequence number, boot counter and the SenML pack
(RFC 8428, CBOR labels), in deterministic CBOR. Two readers that provably decide the same:
the general path (decode, check, re-encode) and the exact-form reader, one pass over the
bytes every gateway writes (tests/fieldproof/test_wire_properties.py)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from fieldproof.formats.cbor import (
    MalformedMessage,
    WireError,
    _decode_fixed_schema,
    encode_deterministic,
)

WIRE_VERSION = 1


#: Most readings one message may carry.
MAX_READINGS_PER_MESSAGE = 1000


MAX_SEQ = 2**63 - 1


#: sample times must fit a 64-bit nanosecond timestamp (InfluxDB's range ends in 2262)
MAX_SAMPLE_TIME = 9_000_000_000.0


# SenML CBOR labels (RFC 8428 §6, Table 4)
SENML_BN = -2


SENML_BT = -3


SENML_N = 0


SENML_U = 1


SENML_V = 2


SENML_VS = 3


SENML_T = 6


SENML_BASE_PREFIX = "urn:dev:fp:"


MISSING_PREFIX = "missing:"


_UNIT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%/._-")


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-:._/")


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value: which sensor, which quantity, SenML unit, value, sample time (s).

    ``value`` is None when the sensor failed; ``missing_reason`` then says why."""

    sensor: str
    quantity: str
    unit: str
    value: float | None
    time: float
    missing_reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.sensor}/{self.quantity}"


#: a reading as a plain tuple, in :class:`Reading`'s field order
PlainReading = tuple[str, str, str, float | None, float, str]


#: a payload as a plain tuple: gateway, seq, boot, readings
PlainPayload = tuple[str, int, int, tuple[PlainReading, ...]]


@dataclass(frozen=True, slots=True)
class Payload:
    """What a gateway signs: who, which message in its never-repeating sequence, what it read."""

    gateway: str
    seq: int
    boot: int
    readings: tuple[Reading, ...]

    def to_cbor(self) -> bytes:
        return encode_deterministic(self.to_obj())

    def to_obj(self) -> dict[str, Any]:
        if not self.readings:
            raise WireError("a message must carry at least one reading")
        base_time = min(r.time for r in self.readings)
        pack: list[dict[int, Any]] = []
        for i, r in enumerate(self.readings):
            rec: dict[int, Any] = {SENML_N: r.name}
            if i == 0:
                rec[SENML_BN] = base_name(self.gateway)
                rec[SENML_BT] = base_time
            if r.unit:
                rec[SENML_U] = r.unit
            if r.value is None:
                rec[SENML_VS] = MISSING_PREFIX + (r.missing_reason or "unknown")
            else:
                rec[SENML_V] = r.value
            offset = r.time - base_time
            if offset:
                rec[SENML_T] = offset
            pack.append(rec)
        return {
            "v": WIRE_VERSION,
            "gw": self.gateway,
            "seq": self.seq,
            "boot": self.boot,
            "e": pack,
        }


def base_name(gateway: str) -> str:
    return f"{SENML_BASE_PREFIX}{gateway}:"


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > 128 or not set(name) <= _NAME_CHARS:
        raise MalformedMessage(
            f"{what} {name!r} is empty, too long or has characters SenML forbids"
        )


def payload_from_cbor(data: bytes) -> Payload:
    """Parse and validate a payload (strictly deterministic CBOR, SenML rules, sane bounds)."""
    gateway, seq, boot, readings = plain_payload_from_cbor(data)
    return Payload(gateway, seq, boot, tuple(Reading(*r) for r in readings))


def plain_payload_from_cbor(data: bytes) -> PlainPayload:
    """:func:`payload_from_cbor` as plain tuples: for callers that handle many messages and
    never need the objects (the verifier)."""
    fast = _payload_exact(data)
    return fast if fast is not None else _payload_general_plain(data)


def _payload_general_plain(data: bytes) -> PlainPayload:
    """:func:`_payload_general` as plain tuples (what the exact reader must agree with)."""
    p = _payload_general(data)
    return (
        p.gateway,
        p.seq,
        p.boot,
        tuple(
            (r.sensor, r.quantity, r.unit, r.value, r.time, r.missing_reason) for r in p.readings
        ),
    )


def _payload_general(data: bytes) -> Payload:
    """:func:`payload_from_cbor` for any bytes: decode, then check every rule, saying which
    one failed. The reference the exact-form reader must agree with."""
    obj = _decode_fixed_schema(data, "payload")
    if not isinstance(obj, dict) or set(obj) != {"v", "gw", "seq", "boot", "e"}:
        raise MalformedMessage("payload must be a map with exactly v, gw, seq, boot, e")
    if type(obj["v"]) is not int or obj["v"] != WIRE_VERSION:  # not true, not 1.0: one encoding
        raise MalformedMessage(f"payload version {obj['v']!r} is not {WIRE_VERSION}")
    gateway, seq, boot, pack = obj["gw"], obj["seq"], obj["boot"], obj["e"]
    if not isinstance(gateway, str):
        raise MalformedMessage("gw must be a text string")
    _check_name(gateway, "gateway id")
    for label, value in (("seq", seq), ("boot", boot)):
        if type(value) is not int or not 0 <= value <= MAX_SEQ:
            raise MalformedMessage(f"{label} must be an unsigned integer below 2^63")
    if not isinstance(pack, list) or not 1 <= len(pack) <= MAX_READINGS_PER_MESSAGE:
        raise MalformedMessage(f"e must be a SenML pack of 1..{MAX_READINGS_PER_MESSAGE} records")
    readings: list[Reading] = []
    base_time: float | None = None
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise MalformedMessage(f"SenML record {i} is not a map")
        allowed = {SENML_N, SENML_U, SENML_V, SENML_VS, SENML_T}
        if i == 0:
            allowed |= {SENML_BN, SENML_BT}
            if rec.get(SENML_BN) != base_name(gateway):
                raise MalformedMessage("SenML base name does not match the gateway id")
            bt = rec.get(SENML_BT)
            if not isinstance(bt, int | float) or isinstance(bt, bool) or not math.isfinite(bt):
                raise MalformedMessage("SenML base time must be a finite number")
            base_time = float(bt)
        extra = set(rec) - allowed
        if extra:
            raise MalformedMessage(f"SenML record {i} has labels fieldproof does not use: {extra}")
        name, unit = rec.get(SENML_N), rec.get(SENML_U, "")
        if not isinstance(name, str) or name.count("/") != 1:
            raise MalformedMessage(f"SenML record {i} name must be '<sensor>/<quantity>'")
        _check_name(name, "SenML name")
        if not isinstance(unit, str) or len(unit) > 16 or not set(unit) <= _UNIT_CHARS:
            raise MalformedMessage(
                f"SenML record {i} unit must be up to 16 of A-Z a-z 0-9 % / . _ -"
            )
        offset = rec.get(SENML_T, 0)
        if type(offset) not in (int, float) or not math.isfinite(offset):
            raise MalformedMessage(f"SenML record {i} time must be a finite number")
        has_v, has_vs = SENML_V in rec, SENML_VS in rec
        if has_v == has_vs:
            raise MalformedMessage(f"SenML record {i} must carry exactly one of v or vs")
        sensor, quantity = name.split("/")
        assert base_time is not None
        if not 0.0 <= base_time + offset <= MAX_SAMPLE_TIME:
            raise MalformedMessage(
                f"SenML record {i} sample time {base_time + offset!r} is outside 1970..2255"
            )
        if has_v:
            value = rec[SENML_V]
            if type(value) not in (int, float) or not math.isfinite(value):
                raise MalformedMessage(f"SenML record {i} value must be a finite number")
            readings.append(Reading(sensor, quantity, unit, float(value), base_time + offset))
        else:
            text = rec[SENML_VS]
            if not isinstance(text, str) or not text.startswith(MISSING_PREFIX) or len(text) > 200:
                raise MalformedMessage(f"SenML record {i} vs must be 'missing:<reason>'")
            readings.append(
                Reading(
                    sensor, quantity, unit, None, base_time + offset, text[len(MISSING_PREFIX) :]
                )
            )
    return Payload(gateway, seq, boot, tuple(readings))


#: SenML labels as their one-byte encodings, in deterministic order: n u v vs t, then bn bt
_LABELS_FIRST = frozenset((0x00, 0x01, 0x02, 0x03, 0x06, 0x21, 0x22))


_LABELS = frozenset((0x00, 0x01, 0x02, 0x03, 0x06))


_HALF, _SINGLE, _DOUBLE = struct.Struct(">e"), struct.Struct(">f"), struct.Struct(">d")


#: float head -> (its width, the next narrower width, which must not hold the value exactly)
_FLOAT_FORMS = {0xF9: (_HALF, None), 0xFA: (_SINGLE, _HALF), 0xFB: (_DOUBLE, _SINGLE)}


#: validated SenML names (-> sensor, quantity), units and gateway ids by their encoded bytes:
#: a handful of distinct ones in real traffic, capped so hostile traffic cannot grow them. A
#: cached string is the same object every time, so readings share their names.
_NAMES: dict[bytes, tuple[str, str] | None] = {}


_UNITS: dict[bytes, str | None] = {}


_GATEWAYS: dict[bytes, str | None] = {}


_CACHE_CAP = 4096


class _NotExact(Exception):
    """Internal: the bytes are not in the exact form (the general path takes over)."""


def _text_at(data: bytes, pos: int) -> tuple[bytes, int]:
    """A text string's raw bytes at ``pos`` (shortest head only) and the position after it."""
    initial = data[pos]
    if 0x60 <= initial <= 0x77:
        start, length = pos + 1, initial - 0x60
    elif initial == 0x78 and data[pos + 1] >= 24:
        start, length = pos + 2, data[pos + 1]
    elif initial == 0x79 and (length := int.from_bytes(data[pos + 1 : pos + 3], "big")) >= 256:
        start = pos + 3
    else:
        raise _NotExact
    end = start + length
    if end > len(data):
        raise _NotExact
    return data[start:end], end


def _number_at(data: bytes, pos: int) -> tuple[int | float, int]:
    """A finite number at ``pos`` in deterministic form: an integer in -24..23, or a float in
    the shortest width that holds it exactly (RFC 8949 §4.2.1, what cbor2's canonical encoder
    writes, so what the general path's re-encode compares with)."""
    initial = data[pos]
    if initial < 0x18:
        return initial, pos + 1
    if 0x20 <= initial < 0x38:
        return 0x1F - initial, pos + 1
    form = _FLOAT_FORMS.get(initial)
    if form is None:
        raise _NotExact
    width, narrower = form
    try:
        value: float = width.unpack_from(data, pos + 1)[0]
        if math.isfinite(value) and not (narrower is not None and _holds(narrower, value)):
            return value, pos + 1 + width.size
    except struct.error:  # truncated
        pass
    raise _NotExact


def _holds(width: struct.Struct, value: float) -> bool:
    try:
        return bool(width.unpack(width.pack(value))[0] == value)
    except OverflowError:
        return False


def _uint_at(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned integer up to :data:`MAX_SEQ` in its shortest head."""
    initial = data[pos]
    if initial < 0x18:
        return initial, pos + 1
    if not 0x18 <= initial <= 0x1B:
        raise _NotExact
    size = 1 << (initial - 0x18)
    end = pos + 1 + size
    value = int.from_bytes(data[pos + 1 : end], "big")
    if end > len(data) or value < (24 if size == 1 else 1 << (4 * size)) or value > MAX_SEQ:
        raise _NotExact
    return value, end


def _cached(cache: dict[bytes, Any], raw: bytes, check: Any) -> Any:
    """``check`` of the text, remembered. Every valid name, unit and gateway id is ASCII of at
    most 128 bytes, so anything longer is refused without being kept: the cache holds at most
    ``_CACHE_CAP`` short keys whatever the traffic."""
    if len(raw) > 128:
        return None
    if len(cache) >= _CACHE_CAP:
        cache.clear()
    value = cache[raw] = check(raw.decode())
    return value


def _check_senml_name(name: str) -> tuple[str, str] | None:
    if 0 < len(name) <= 128 and set(name) <= _NAME_CHARS and name.count("/") == 1:
        sensor, _, quantity = name.partition("/")
        return sensor, quantity
    return None


def _check_unit(unit: str) -> str | None:
    return unit if len(unit) <= 16 and set(unit) <= _UNIT_CHARS else None


def _check_gateway(gw: str) -> str | None:
    return gw if 0 < len(gw) <= 128 and set(gw) <= _NAME_CHARS else None


def _payload_exact(data: bytes) -> PlainPayload | None:
    """The payload in ``data`` if it is in the form gateways write and valid, else None (for
    the general path to decide and explain)."""
    try:
        return _read_payload_exact(data)
    except (_NotExact, IndexError, UnicodeDecodeError):
        return None


def _read_payload_exact(data: bytes) -> PlainPayload | None:
    # {"e": [records], "v": 1, "gw": text, "seq": uint, "boot": uint}, in deterministic order;
    # IndexError from reading past the end means "not exact" like _NotExact does
    if data[:3] != b"\xa5\x61e":
        return None
    initial = data[3]
    if 0x81 <= initial <= 0x97:
        count, pos = initial - 0x80, 4
    elif initial == 0x98 and data[4] >= 24:
        count, pos = data[4], 5
    elif initial == 0x99 and 256 <= (count := int.from_bytes(data[4:6], "big")) <= (
        MAX_READINGS_PER_MESSAGE
    ):
        pos = 6
    else:
        return None
    names, units, text_at, number_at = _NAMES, _UNITS, _text_at, _number_at
    readings: list[PlainReading] = []
    bn = b""
    base_time = 0.0
    for i in range(count):
        initial = data[pos]
        if not 0xA2 <= initial <= 0xA7:  # n and v or vs, at most n u v vs t bn bt
            return None
        pos += 1
        labels = _LABELS if i else _LABELS_FIRST
        name: tuple[str, str] | None = None
        unit = missing = ""
        value: int | float | None = None
        offset: int | float = 0
        last = -1
        have_value = False
        for _ in range(initial - 0xA0):
            label = data[pos]
            if label <= last or label not in labels:
                return None
            last = label
            if label == 0x00:
                head = data[pos + 1]  # names are short: their text head inline (a sixth faster)
                if 0x60 <= head <= 0x77:
                    raw, pos = data[pos + 2 : pos + head - 0x5E], pos + head - 0x5E
                elif head == 0x78 and data[pos + 2] >= 24:
                    raw, pos = data[pos + 3 : pos + 3 + data[pos + 2]], pos + 3 + data[pos + 2]
                else:
                    raw, pos = text_at(data, pos + 1)
                name = names.get(raw) or _cached(names, raw, _check_senml_name)
                if name is None:
                    return None
            elif label == 0x01:
                head = data[pos + 1]
                if 0x60 <= head <= 0x77:
                    raw, pos = data[pos + 2 : pos + head - 0x5E], pos + head - 0x5E
                else:
                    raw, pos = text_at(data, pos + 1)
                got = units.get(raw)
                unit = got if got is not None else _cached(units, raw, _check_unit)
                if unit is None:
                    return None
            elif label == 0x02:
                value, pos = number_at(data, pos + 1)
                have_value = True
            elif label == 0x03:
                if have_value:
                    return None
                raw, pos = text_at(data, pos + 1)
                text = raw.decode()
                if not text.startswith(MISSING_PREFIX) or len(text) > 200:
                    return None
                missing, have_value = text[len(MISSING_PREFIX) :], True
            elif label == 0x06:
                offset, pos = number_at(data, pos + 1)
            elif label == 0x21:
                bn, pos = text_at(data, pos + 1)
            else:
                bt, pos = number_at(data, pos + 1)
                base_time = float(bt)
        if name is None or not have_value or (i == 0 and last != 0x22):
            return None
        t = base_time + offset
        if not 0.0 <= t <= MAX_SAMPLE_TIME:
            return None
        readings.append(
            (name[0], name[1], unit, None if value is None else float(value), t, missing)
        )
    if data[pos : pos + 6] != b"\x61v\x01\x62gw":
        return None
    raw_gw, pos = text_at(data, pos + 6)
    if data[pos : pos + 4] != b"\x63seq":
        return None
    seq, pos = _uint_at(data, pos + 4)
    if data[pos : pos + 5] != b"\x64boot":
        return None
    boot, pos = _uint_at(data, pos + 5)
    if pos != len(data):
        return None
    got_gw = _GATEWAYS.get(raw_gw)
    gateway = got_gw if got_gw is not None else _cached(_GATEWAYS, raw_gw, _check_gateway)
    if gateway is None or bn != b"urn:dev:fp:" + raw_gw + b":":
        return None
    return gateway, seq, boot, tuple(readings)
