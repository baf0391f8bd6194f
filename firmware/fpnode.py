# fieldproof serial sensor node (MicroPython, RP2040 or ESP32).
#
# Reads capacitive soil moisture probes (ADC, averaged, each probe powered through a GPIO only
# while it is sampled) and DS18B20s on one 1-Wire bus, and talks to the gateway over a UART
# in framed lines (fpframe.py): it pushes a reading every INTERVAL_S seconds and answers
#
#   IDENT                      -> ID     firmware, board, unique id, probes, interval, stored cal
#   READ                       -> R      one reading now
#   INTERVAL,s=<seconds>       -> OK     change the push interval (0 = only on READ)
#   CAL,probe=<i>,point=dry|wet -> CAL   a long-averaged raw count for the gateway to store
#
# Every frame carries the node's own sequence number (0 after boot, in the HELLO frame) so the
# gateway can see lost frames and reboots; every reply carries re=<the command's seq>. The node
# never applies calibration: it sends raw counts and the gateway applies its stored two-point
# calibration, so a recalibration never needs a firmware change.

import json
import time

import ds18x20
import machine
import onewire

import fpframe

FIRMWARE = "0.1.0"
CAL_FILE = "fpnode_cal.json"


class Probe:
    """One capacitive probe: ADC input and the GPIO that powers it."""

    def __init__(self, adc_pin, power_pin):
        self.power = machine.Pin(power_pin, machine.Pin.OUT, value=0)
        self.adc = machine.ADC(machine.Pin(adc_pin))
        try:
            self.adc.atten(machine.ADC.ATTN_11DB)  # ESP32: full 0-3.3 V range
        except (AttributeError, TypeError):
            pass  # RP2040 has a fixed range

    def sample(self, count, settle_ms):
        self.power.value(1)
        try:
            time.sleep_ms(settle_ms)
            total = 0
            for _ in range(count):
                total += self.adc.read_u16()
                time.sleep_ms(2)
            return total // count
        finally:
            self.power.value(0)


class Node:
    def __init__(self, cfg, uart=None):
        self.cfg = cfg
        self.uart = uart or machine.UART(
            cfg.UART_ID, baudrate=cfg.BAUDRATE, tx=machine.Pin(cfg.UART_TX),
            rx=machine.Pin(cfg.UART_RX),
        )
        self.probes = [Probe(a, p) for a, p in cfg.PROBES]
        self.ds = ds18x20.DS18X20(onewire.OneWire(machine.Pin(cfg.ONEWIRE_PIN)))
        self.interval_s = cfg.INTERVAL_S
        self.seq = 0
        self.rx = b""
        self.next_push = time.ticks_add(time.ticks_ms(), self.interval_s * 1000)
        self.cal = self._load_cal()

    # -- output ------------------------------------------------------------------------------

    def send(self, kind, fields):
        self.uart.write(fpframe.encode(self.seq, kind, fields))
        self.seq = (self.seq + 1) & 0xFFFF

    def reading_fields(self):
        fields = [("up", time.ticks_ms() // 1000)]
        for i, probe in enumerate(self.probes):
            try:
                fields.append(("m%d" % i, probe.sample(self.cfg.SAMPLES, self.cfg.SETTLE_MS)))
            except Exception:
                fields.append(("m%d" % i, "!adc"))
        try:
            roms = self.ds.scan()
            if roms:
                self.ds.convert_temp()
                time.sleep_ms(self.cfg.DS_CONVERSION_MS)
        except Exception:
            roms = []
            fields.append(("dbus", "!onewire"))
        for rom in roms:
            key = "d" + "".join("%02x" % b for b in rom)
            try:
                t = self.ds.read_temp(rom)
            except Exception:
                fields.append((key, "!crc"))
                continue
            if t is None:
                fields.append((key, "!none"))
            elif t == 85.0:
                fields.append((key, "!85"))  # power-on value: the conversion did not run
            else:
                fields.append((key, "%.4f" % t))
        return fields

    # -- calibration points kept on the node too (the gateway's copy is the one used) --------

    def _load_cal(self):
        try:
            with open(CAL_FILE) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def _save_cal(self):
        try:
            with open(CAL_FILE, "w") as fh:
                json.dump(self.cal, fh)
        except OSError:
            pass

    # -- commands ----------------------------------------------------------------------------

    def handle(self, line):
        try:
            seq, kind, args = fpframe.decode(line)
        except ValueError as exc:
            self.send("ERR", [("re", "-"), ("code", str(exc.args[0]) if exc.args else "bad")])
            return
        re = ("re", seq)
        if kind == "IDENT":
            uid = "".join("%02x" % b for b in machine.unique_id())
            fields = [re, ("fw", FIRMWARE), ("board", self.cfg.BOARD), ("uid", uid),
                      ("probes", len(self.probes)), ("interval", self.interval_s)]
            for key in sorted(self.cal):
                fields.append(("cal" + key, self.cal[key]))
            self.send("ID", fields)
        elif kind == "READ":
            self.send("R", [re] + self.reading_fields())
        elif kind == "INTERVAL":
            try:
                seconds = int(args["s"])
                if not 0 <= seconds <= 86400:
                    raise ValueError
            except (KeyError, ValueError):
                self.send("ERR", [re, ("code", "bad-arg")])
                return
            self.interval_s = seconds
            self.next_push = time.ticks_add(time.ticks_ms(), seconds * 1000)
            self.send("OK", [re, ("cmd", "INTERVAL"), ("interval", seconds)])
        elif kind == "CAL":
            try:
                index = int(args["probe"])
                point = args["point"]
                probe = self.probes[index]
                if point not in ("dry", "wet"):
                    raise ValueError
            except (KeyError, ValueError, IndexError):
                self.send("ERR", [re, ("code", "bad-arg")])
                return
            raw = probe.sample(self.cfg.CAL_SAMPLES, self.cfg.SETTLE_MS)
            self.cal["%d%s" % (index, point)] = raw
            self._save_cal()
            self.send("CAL", [re, ("probe", index), ("point", point), ("raw", raw),
                              ("n", self.cfg.CAL_SAMPLES)])
        else:
            self.send("ERR", [re, ("code", "unknown-cmd")])

    def poll_uart(self):
        """Collect bytes; hand over each complete line; skip noise before a '$'."""
        n = self.uart.any()
        if not n:
            return
        data = self.uart.read(n)
        if not data:
            return
        self.rx += data
        while True:
            nl = self.rx.find(b"\n")
            if nl < 0:
                if len(self.rx) > fpframe.MAX_LINE:
                    self.rx = b""  # no end of line in sight: drop the noise
                return
            line, self.rx = self.rx[:nl], self.rx[nl + 1 :]
            start = line.rfind(b"$")
            if start >= 0:
                self.handle(line[start:])

    def step(self):
        self.poll_uart()
        if self.interval_s and time.ticks_diff(time.ticks_ms(), self.next_push) >= 0:
            self.next_push = time.ticks_add(self.next_push, self.interval_s * 1000)
            self.send("R", [("re", "-")] + self.reading_fields())

    def run(self):
        self.send("HELLO", [("fw", FIRMWARE), ("board", self.cfg.BOARD)])
        while True:
            try:
                self.step()
            except Exception as exc:  # keep serving: report and carry on
                try:
                    self.send("ERR", [("re", "-"), ("code", "internal"),
                                      ("type", type(exc).__name__)])
                except Exception:
                    pass
            time.sleep_ms(5)


def main():
    import config

    Node(config).run()
