"""A fake 1-Wire sysfs tree (w1_slave files as the kernel writes them) for the DS18B20 tests."""

from __future__ import annotations

from pathlib import Path

DEV = "28-0316a2791f2b"


REAL_23125 = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"


def make_tree(base: Path, devices: dict[str, str]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    (base / "w1_bus_master1").mkdir(exist_ok=True)
    for dev, text in devices.items():
        (base / dev).mkdir(exist_ok=True)
        (base / dev / "w1_slave").write_text(text)
