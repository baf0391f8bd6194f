"""An SDI-12 bus with one or more sensors (TEROS 12-like by default), answering on a pty.

Control file::

    {"sensors": {"0": {"values": [2467.5, 21.3, 812], "ident": "13METER   TER12 1120001",
                       "ttt": 1, "ready_after": 0.3, "per_page": 9}},
     "mode": null | "echo" | "silent",   # sticky
     "faults": ["bad_crc", ...]}          # one-shot, one per command

A measurement announces ``ttt`` seconds and sends its service request after ``ready_after``
seconds (the time is put in on purpose: a pty has no baud rate). ``per_page`` splits the
values over D0, D1, …. Faults: ``silent`` (no answer), ``garbage`` (noise line),
``bad_crc`` (a data line whose CRC is wrong), ``no_service_request`` (the sensor forgets it),
``abort`` (D0 returns no values), ``echo`` (the adapter echoes each command before the reply).
Unknown commands get no answer, as on a real bus."""

from __future__ import annotations

import argparse
import re
import time

from common import Control, Line, Log, garbage


def crc16(text: str) -> int:
    crc = 0
    for ch in text.encode("ascii"):
        crc ^= ch
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc_chars(text: str) -> str:
    c = crc16(text)
    return chr(0x40 | (c >> 12) & 0x3F) + chr(0x40 | (c >> 6) & 0x3F) + chr(0x40 | c & 0x3F)


def fmt(v: float) -> str:
    text = f"{v:+.3f}".rstrip("0").rstrip(".")
    return text if text not in ("+", "-") else "+0"


class Bus:
    def __init__(self, line: Line, control: Control, log: Log) -> None:
        self.line, self.control, self.log = line, control, log
        self.pending: dict[str, dict[str, object]] = {}  # address → {"values", "crc", "at"}

    def send(self, text: str, fault: object) -> None:
        if fault == "garbage":
            self.line.write(garbage(9) + b"\r\n")
            return
        self.line.write(text.encode("ascii") + b"\r\n")

    def handle(self, cmd: str) -> None:
        fault = self.control.next_fault()
        self.log.write(event="command", cmd=cmd, fault=fault)
        sensors = self.control.data.get("sensors", {})
        if fault == "silent":
            return
        if self.control.data.get("mode") == "echo" or fault == "echo":
            self.line.write(cmd.encode("ascii"))
        if cmd == "?!":
            if sensors:
                self.send(sorted(sensors)[0], fault)
            return
        address, body = cmd[0], cmd[1:-1]
        sensor = sensors.get(address)
        if sensor is None:
            return
        if body == "":
            self.send(address, fault)
        elif body == "I":
            self.send(address + sensor.get("ident", "13FIELDPRFSIM001100"), fault)
        elif body in ("M", "MC"):
            values = list(sensor.get("values", []))
            ttt, ready_after = int(sensor.get("ttt", 1)), float(sensor.get("ready_after", 0.2))
            self.send(f"{address}{ttt:03d}{len(values)}", fault)
            self.pending[address] = {"values": values, "crc": body == "MC"}
            if ttt and fault != "no_service_request":
                time.sleep(ready_after)
                self.line.write(address.encode("ascii") + b"\r\n")
                self.log.write(event="service_request", address=address)
        elif m := re.fullmatch(r"D(\d)", body):
            page = int(m.group(1))
            pend = self.pending.get(address, {"values": [], "crc": False})
            per_page = int(sensor.get("per_page", 9))
            values = pend["values"][page * per_page : (page + 1) * per_page]  # type: ignore[index]
            if fault == "abort":
                values = []
            text = address + "".join(fmt(v) for v in values)
            if pend["crc"]:
                crc = crc_chars(text)
                if fault == "bad_crc":
                    crc = crc[:2] + chr(0x40 | ((ord(crc[2]) + 1) & 0x3F))
                text += crc
            self.send(text, fault)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    bus = Bus(Line(args.fd), Control(args.control), Log(args.log))
    bus.log.write(event="ready")
    buf = ""
    while True:
        chunk = bus.line.read(0.5)
        if not chunk:
            continue
        # a break reaches a pty as nothing at all; a real adapter may pass a NUL: drop both
        buf += bytes(b & 0x7F for b in chunk if b & 0x7F).decode("ascii", errors="replace")
        while "!" in buf:
            cmd, buf = buf.split("!", 1)
            m = re.search(r"(\?|[0-9a-zA-Z][A-Z0-9]{0,3})$", cmd)
            if m:
                bus.handle(m.group(1) + "!")
            else:
                bus.log.write(event="noise", data=cmd)


if __name__ == "__main__":
    main()
