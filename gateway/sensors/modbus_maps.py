"""Register maps of RS-485 Modbus-RTU soil probes, as data.

Each map has exactly the shape of a custom ``map`` table in a ``[[sensors]]`` entry, so a
probe that is not listed here is supported by copying the nearest map into the config and
editing it. ``scale`` and ``offset`` turn the register into the SenML unit of the quantity:
moisture in 0.1 % → m³/m³ is 0.001, EC in µS/cm → S/m is 0.0001, temperature in 0.1 °C is
0.1 with a signed register. Sources are the vendors' public manuals; the maps are the
factory defaults (address 1) and some vendors ship variants with fewer quantities — list the
ones a probe has with ``quantities = [...]`` in its config table."""

from __future__ import annotations

from typing import Any

# µS/cm → S/m
US_PER_CM = 1e-4

BUILTIN_MAPS: dict[str, dict[str, Any]] = {
    "cwt-soil": {
        "description": "ComWinTop CWT-Soil (THC / THCPH / NPK 7-in-1) probe",
        "source": "CWT soil sensor manual V1.4 (comwintop.com): 4800 8N1, registers 0x0000-0x0006",
        "function": 3,
        "baudrate": 4800,
        "parity": "N",
        "stopbits": 1,
        "registers": [
            {"quantity": "soil_moisture", "address": 0x0000, "type": "uint16", "scale": 0.001},
            {"quantity": "soil_temperature", "address": 0x0001, "type": "int16", "scale": 0.1},
            {"quantity": "soil_ec", "address": 0x0002, "type": "uint16", "scale": US_PER_CM},
            {"quantity": "soil_ph", "address": 0x0003, "type": "uint16", "scale": 0.1},
            {"quantity": "soil_nitrogen", "address": 0x0004, "type": "uint16", "scale": 1},
            {"quantity": "soil_phosphorus", "address": 0x0005, "type": "uint16", "scale": 1},
            {"quantity": "soil_potassium", "address": 0x0006, "type": "uint16", "scale": 1},
        ],
    },
    "jxbs-3001": {
        "description": "JXCT JXBS-3001 soil probe (TR / EC / PH / NPK 7-in-1 RS485)",
        "source": "JXBS-3001 RS485 manual (jxct-iot.com): 9600 8N1, pH 0x06, moisture 0x12, "
        "temperature 0x13, EC 0x15, N/P/K 0x1E-0x20",
        "function": 3,
        "baudrate": 9600,
        "parity": "N",
        "stopbits": 1,
        "registers": [
            {"quantity": "soil_ph", "address": 0x0006, "type": "uint16", "scale": 0.01},
            {"quantity": "soil_moisture", "address": 0x0012, "type": "uint16", "scale": 0.001},
            {"quantity": "soil_temperature", "address": 0x0013, "type": "int16", "scale": 0.1},
            {"quantity": "soil_ec", "address": 0x0015, "type": "uint16", "scale": US_PER_CM},
            {"quantity": "soil_nitrogen", "address": 0x001E, "type": "uint16", "scale": 1},
            {"quantity": "soil_phosphorus", "address": 0x001F, "type": "uint16", "scale": 1},
            {"quantity": "soil_potassium", "address": 0x0020, "type": "uint16", "scale": 1},
        ],
    },
    "sensecap-s-soil-mte": {
        "description": "Seeed SenseCAP S-Temp&VWC&EC-02 (and OEM twins) soil probe",
        "source": "SenseCAP soil moisture/temperature/EC sensor user guide §5.2: 9600 8N1, "
        "temperature 0x0000 (0.01 °C), VWC 0x0001 (0.01 %), EC 0x0002 (µS/cm)",
        "function": 3,
        "baudrate": 9600,
        "parity": "N",
        "stopbits": 1,
        "registers": [
            {"quantity": "soil_temperature", "address": 0x0000, "type": "int16", "scale": 0.01},
            {"quantity": "soil_moisture", "address": 0x0001, "type": "uint16", "scale": 0.0001},
            {"quantity": "soil_ec", "address": 0x0002, "type": "uint16", "scale": US_PER_CM},
        ],
    },
}
