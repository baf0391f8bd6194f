"""Imports every built-in driver module so each registers its kind."""

from gateway.sensors import simulated  # noqa: F401
