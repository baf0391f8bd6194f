"""Imports every built-in driver module so each registers its kind (the gateway itself loads
only the kinds its config names: ``gateway.sensors.base.BUILTIN_DRIVERS``)."""

from gateway.sensors.base import _load_builtin_drivers

_load_builtin_drivers()
