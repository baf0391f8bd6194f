# Stub of MicroPython's `onewire`: the bus holds the DS18B20s listed in the world file.
import machine


class OneWireError(Exception):
    pass


class OneWire:
    def __init__(self, pin):
        self.pin = pin

    def scan(self):
        w = machine.world()
        if w.get("onewire") == "short":
            raise OneWireError("bus short")
        return [
            bytes(bytearray(int(rom[i : i + 2], 16) for i in range(0, 16, 2)))
            for rom in sorted(w.get("ds", {}))
        ]
