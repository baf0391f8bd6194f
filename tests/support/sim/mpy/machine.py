# ruff: noqa: UP031, SIM115  (MicroPython code: %-formatting and long-lived files are deliberate)
# Stub of MicroPython's `machine` for running the node firmware under the unix port in tests.
#
# The "world" (what the probes would measure) is a JSON file named by FPNODE_WORLD that the
# test may rewrite at any time; every pin change and ADC read is appended to FPNODE_EVENTS so
# the test can check that a probe is powered exactly while it is sampled. The UART is the
# master side of a pseudo-terminal (fd FPNODE_UART_FD) or a tty path (FPNODE_UART); the gateway's
# driver opens the slave side.
import json
import os
import select
import sys
import termios

_pins = {}
_power_ons = {}  # pin → how many times it was switched on (one "session" each)


def world():
    try:
        with open(os.getenv("FPNODE_WORLD")) as fh:
            return json.load(fh)
    except (OSError, ValueError, TypeError):
        return {}


def event(text):
    path = os.getenv("FPNODE_EVENTS")
    if path:
        with open(path, "a") as fh:
            fh.write(text + "\n")


def unique_id():
    return b"\xe6\x61\x41\x04\x03\x2b\x2c\x22"


def reset():
    sys.exit(1)


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 2

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _pins.get(self.id, 0)
        v = 1 if v else 0
        if _pins.get(self.id) != v:
            event("pin %s %d" % (self.id, v))
            if v:
                _power_ons[self.id] = _power_ons.get(self.id, 0) + 1
        _pins[self.id] = v

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.id = pin.id if isinstance(pin, Pin) else pin

    def atten(self, a):
        pass

    def read_u16(self):
        w = world()
        power = w.get("power", {}).get(str(self.id))
        powered = power is None or _pins.get(power, 0) == 1
        event("adc %s %s" % (self.id, "powered" if powered else "unpowered"))
        if not powered:
            return int(w.get("unpowered_adc", 150))
        sessions = w.get("adc_sessions", {}).get(str(self.id))
        if sessions:  # the probe moved between power-ups (dry air, then water)
            return int(sessions[min(_power_ons.get(power, 1) - 1, len(sessions) - 1)])
        return int(w.get("adc", {}).get(str(self.id), 0))


class UART:
    def __init__(self, uart_id, baudrate=115200, tx=None, rx=None, **kw):
        fd = os.getenv("FPNODE_UART_FD")
        if fd:  # the master side of the test's pty, inherited
            self.f = open(int(fd), "r+b")
        else:
            self.f = open(os.getenv("FPNODE_UART"), "r+b")
            termios.setraw(self.f.fileno())
        self.poller = select.poll()
        self.poller.register(self.f, select.POLLIN)

    def any(self):
        return 1 if self.poller.poll(0) else 0

    def read(self, n=-1):
        out = b""
        while (n < 0 or len(out) < n) and self.poller.poll(0):
            out += self.f.read(1)
        return out or None

    def write(self, data):
        # line faults between node and gateway, chosen by the node's sequence number
        w = world()
        seq = data.split(b",")[1].decode() if data.startswith(b"$FP1,") else ""
        if w.get("mute") or seq in [str(n) for n in w.get("tx_drop_seqs", [])]:
            return len(data)
        if seq in [str(n) for n in w.get("tx_noise_seqs", [])]:
            self.f.write(b"\x00\xff#noise$FP1,9")  # noise, including a cut-off frame start
        if seq in [str(n) for n in w.get("tx_corrupt_seqs", [])]:
            data = data[:8] + (b"X" if data[8:9] != b"X" else b"Y") + data[9:]
        return self.f.write(data)
