"""fieldproof: trustworthy farm sensor data, from the probe in the soil to the inspector."""

__version__ = "0.1.0"
