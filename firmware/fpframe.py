# fieldproof serial sensor node: line framing (MicroPython and CPython).
#
#   $FP1,<seq>,<type>[,<key>=<value>...]*<CRC>\r\n
#
# CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over the bytes between "$" and "*",
# as four upper-case hex digits. Keys and values use only [A-Za-z0-9_.:+-!]; a value starting
# with "!" is a failed channel and names the reason. See docs/sensors.md.

VERSION = b"FP1"
MAX_LINE = 240
_OK = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:+-!"


def crc16(data, crc=0xFFFF):
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def _clean(text):
    b = text.encode() if isinstance(text, str) else bytes(text)
    for c in b:
        if c not in _OK:
            raise ValueError("bad char in field")
    return b


def encode(seq, kind, fields=()):
    """One frame as bytes; fields is a sequence of (key, value) pairs."""
    parts = [VERSION, str(seq & 0xFFFF).encode(), _clean(kind)]
    for key, value in fields:
        parts.append(_clean(key) + b"=" + _clean(str(value)))
    body = b",".join(parts)
    return b"$" + body + b"*" + ("%04X" % crc16(body)).encode() + b"\r\n"


def decode(line):
    """(seq, type, {key: value}) from one line without CR LF; ValueError(code) if bad."""
    line = bytes(line)
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_LINE or not line.startswith(b"$"):
        raise ValueError("bad-frame")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 5:
        raise ValueError("bad-frame")
    body = line[1:star]
    try:
        crc = int(line[star + 1 :], 16)
    except ValueError:
        raise ValueError("bad-frame")
    if crc16(body) != crc:
        raise ValueError("bad-crc")
    parts = body.split(b",")
    if len(parts) < 3 or parts[0] != VERSION:
        raise ValueError("bad-version")
    try:
        seq = int(parts[1])
    except ValueError:
        raise ValueError("bad-frame")
    fields = {}
    for part in parts[3:]:
        eq = part.find(b"=")
        if eq <= 0:
            raise ValueError("bad-frame")
        fields[part[:eq].decode()] = part[eq + 1 :].decode()
    return seq, parts[2].decode(), fields
