"""Imports every built-in driver module so each registers its kind."""

from gateway.sensors import (
    dht22,  # noqa: F401
    ds18b20,  # noqa: F401
    modbus_soil,  # noqa: F401
    sdi12,  # noqa: F401
    sensor_node,  # noqa: F401
    simulated,  # noqa: F401
)
