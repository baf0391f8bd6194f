"""Two-point (dry/wet) calibration of capacitive soil moisture probes, and where it is kept.

A capacitive probe gives a raw ADC count that falls as the soil gets wetter; the count in dry
air and in water differ from probe to probe by more than the whole useful range, so every
probe is calibrated once with ``fieldproof gateway calibrate`` and the two counts are stored.
The mapping between them is linear: it is what the cheap probes support, and the raw count is
sent alongside so a better soil-specific curve can be applied later without re-measuring.

Values may come inline from the sensor's config table or from a calibration file that the
``calibrate`` command writes; inline values win because they are what the operator typed."""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: how far past the dry or wet point a value may fall and still be clamped into range; a probe
#: further out is broken, unplugged or calibrated for another medium, and its value is refused
CLAMP_TOLERANCE = 0.05


class TwoPointCalibration(BaseModel):
    """Raw counts at two known water contents: dry air (0) and water (1.0) unless set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dry: float = Field(description="raw count with the probe in dry air")
    wet: float = Field(description="raw count with the probe in water (or saturated soil)")
    dry_vwc: float = Field(default=0.0, ge=0.0, le=1.0)
    wet_vwc: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _distinct(self) -> TwoPointCalibration:
        if self.dry == self.wet:
            raise ValueError(
                f"dry and wet counts are both {self.dry}: the probe did not change between air "
                "and water; check it is powered and re-run calibrate"
            )
        if self.dry_vwc >= self.wet_vwc:
            raise ValueError("dry_vwc must be below wet_vwc")
        return self

    def apply(self, raw: float) -> tuple[float | None, str]:
        """Volumetric water content (m³/m³) for ``raw``, or (None, reason) when implausible."""
        if not math.isfinite(raw):
            return None, "not-a-number"
        fraction = (raw - self.dry) / (self.wet - self.dry)
        vwc = self.dry_vwc + fraction * (self.wet_vwc - self.dry_vwc)
        if vwc < -CLAMP_TOLERANCE or vwc > self.wet_vwc + CLAMP_TOLERANCE:
            return None, "out-of-range"
        return round(min(max(vwc, 0.0), self.wet_vwc), 4), ""


@dataclass(frozen=True)
class CalibrationRecord:
    """One stored calibration: which probe, the counts, and when it was made."""

    sensor: str
    probe: str
    calibration: TwoPointCalibration
    calibrated_at: str = ""
    note: str = ""


class CalibrationStore:
    """A small TOML file of calibrations, ``["<sensor>"."<probe>"]`` tables, written atomically.

    The gateway's main config is hand-edited and commented; rewriting it from code would lose
    that, so calibrations live beside it in their own file that only this class writes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[tuple[str, str], CalibrationRecord]:
        """All records; a missing file is an empty store, a corrupt one raises ValueError."""
        if not self.path.exists():
            return {}
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"calibration file {self.path} is not valid TOML: {exc}") from None
        out: dict[tuple[str, str], CalibrationRecord] = {}
        for sensor, probes in data.items():
            if not isinstance(probes, dict):
                raise ValueError(f"{self.path}: [{sensor}] must be a table of probes")
            for probe, table in probes.items():
                if not isinstance(table, dict):
                    raise ValueError(f"{self.path}: [{sensor}.{probe}] must be a table")
                fields = {k: table[k] for k in ("dry", "wet", "dry_vwc", "wet_vwc") if k in table}
                try:
                    cal = TwoPointCalibration.model_validate(fields)
                except ValueError as exc:
                    raise ValueError(f"{self.path}: [{sensor}.{probe}]: {exc}") from None
                out[(sensor, probe)] = CalibrationRecord(
                    sensor,
                    probe,
                    cal,
                    str(table.get("calibrated_at", "")),
                    str(table.get("note", "")),
                )
        return out

    def get(self, sensor: str, probe: str) -> TwoPointCalibration | None:
        record = self.load().get((sensor, probe))
        return record.calibration if record else None

    def put(
        self, sensor: str, probe: str, calibration: TwoPointCalibration, note: str = ""
    ) -> None:
        """Store (replace) one probe's calibration, keeping every other record."""
        records = self.load()
        stamp = datetime.now(UTC).replace(microsecond=0).isoformat()
        records[(sensor, probe)] = CalibrationRecord(sensor, probe, calibration, stamp, note)
        self._write(records)

    def _write(self, records: dict[tuple[str, str], CalibrationRecord]) -> None:
        lines = ["# Written by `fieldproof gateway calibrate`; raw counts per probe.", ""]
        for (sensor, probe), rec in sorted(records.items()):
            lines.append(f"[{_key(sensor)}.{_key(probe)}]")
            values: dict[str, Any] = rec.calibration.model_dump()
            values["calibrated_at"] = rec.calibrated_at
            if rec.note:
                values["note"] = rec.note
            for k, v in values.items():
                lines.append(f"{k} = {json.dumps(v)}")
            lines.append("")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def _key(name: str) -> str:
    """A TOML quoted key (JSON string escaping is valid TOML basic-string escaping)."""
    return json.dumps(name)


def resolve_calibration(
    inline: TwoPointCalibration | None, store: CalibrationStore | None, sensor: str, probe: str
) -> tuple[TwoPointCalibration | None, str]:
    """The calibration to use and where it came from ("config", "file <path>" or "")."""
    if inline is not None:
        return inline, "config"
    if store is not None:
        found = store.get(sensor, probe)
        if found is not None:
            return found, f"file {store.path}"
    return None, ""
