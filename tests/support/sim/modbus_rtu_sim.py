"""An RS-485 bus of Modbus-RTU soil probes, written frame by frame (no Modbus library).

Control file::

    {"slaves": {"1": {"0": 312, "1": 65486, ...}, "3": {...}},   # register address → value
     "mode": null | "silent" | ...,                              # sticky fault
     "faults": ["bad_crc", "silent", ...]}                       # one-shot faults, in order

Faults (each applies to one request): ``silent`` (no reply: a dead probe or cut cable),
``garbage`` (line noise instead of a reply), ``bad_crc`` (reply with a corrupted CRC),
``wrong_slave`` (a reply carrying another slave's id: two probes set to the same address),
``exception:<code>`` (a Modbus exception reply), ``truncated`` (half a reply), and
``delay:<seconds>`` (a reply that comes late). Frames are found by CRC, so noise before a
request is skipped the way a real probe's receiver resynchronises on the silent interval."""

from __future__ import annotations

import argparse
import time

from common import Control, Line, Log, garbage


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16_modbus(body).to_bytes(2, "little")


def find_request(buf: bytearray) -> tuple[bytes | None, int]:
    """The first 8-byte read request with a good CRC in ``buf``, and how many bytes to drop."""
    for start in range(max(0, len(buf) - 7)):
        cand = bytes(buf[start : start + 8])
        if len(cand) == 8 and crc16_modbus(cand[:6]) == int.from_bytes(cand[6:], "little"):
            return cand, start + 8
    return None, 0


def answer(slaves: dict[str, dict[str, int]], req: bytes) -> bytes | None:
    slave, func = req[0], req[1]
    address = int.from_bytes(req[2:4], "big")
    count = int.from_bytes(req[4:6], "big")
    table = slaves.get(str(slave))
    if table is None or slave == 0:
        return None  # not on the bus (or broadcast): stay quiet
    if func not in (3, 4):
        return with_crc(bytes([slave, func | 0x80, 0x01]))
    if not 1 <= count <= 125:
        return with_crc(bytes([slave, func | 0x80, 0x03]))
    values = []
    for a in range(address, address + count):
        if str(a) not in table:
            return with_crc(bytes([slave, func | 0x80, 0x02]))
        values.append(int(table[str(a)]) & 0xFFFF)
    payload = b"".join(v.to_bytes(2, "big") for v in values)
    return with_crc(bytes([slave, func, len(payload)]) + payload)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    line, control, log = Line(args.fd), Control(args.control), Log(args.log)
    log.write(event="ready")
    buf = bytearray()
    while True:
        chunk = line.read(0.5)
        if not chunk:
            if buf:
                log.write(event="noise", data=buf.hex())
                buf.clear()
            continue
        buf.extend(chunk)
        while True:
            req, used = find_request(buf)
            if req is None:
                break
            if used > 8:
                log.write(event="noise", data=buf[: used - 8].hex())
            del buf[:used]
            fault = control.next_fault()
            log.write(
                event="request",
                slave=req[0],
                func=req[1],
                address=int.from_bytes(req[2:4], "big"),
                count=int.from_bytes(req[4:6], "big"),
                fault=fault,
            )
            reply = answer(control.data.get("slaves", {}), req)
            if reply is None or fault == "silent":
                continue
            if fault == "garbage":
                reply = garbage(len(reply))
            elif fault == "bad_crc":
                reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
            elif fault == "wrong_slave":
                reply = with_crc(bytes([(reply[0] % 247) + 1]) + reply[1:-2])
            elif fault == "truncated":
                reply = reply[: len(reply) // 2]
            elif isinstance(fault, str) and fault.startswith("exception:"):
                reply = with_crc(bytes([req[0], req[1] | 0x80, int(fault.split(":")[1])]))
            elif isinstance(fault, str) and fault.startswith("delay:"):
                time.sleep(float(fault.split(":")[1]))
            line.write(reply)


if __name__ == "__main__":
    main()
