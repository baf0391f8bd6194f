"""A gateway's status message: the retained JSON on ``<prefix>/<gateway>/status``.

It is the one message a gateway sends unsigned, and brokers keep it (retained): whatever is in
it reaches every collector at every start. So it is read only through :func:`parse_status`,
which bounds its size and nesting, checks every field's type and range (no NaN, no infinity,
no integer past 2^53, no control characters in text) and turns every failure into one
:class:`StatusRejected` with a short reason an operator can count. Nothing downstream (stats
points, /metrics, the doctor) needs to check a value again. The gateway builds its status
through the same model (:func:`encode_status`), so what it sends is what a collector accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from fieldproof.errors import FormatError

#: a status is a few hundred bytes; 16 KiB leaves room for ~100 sensors with their last error
MAX_STATUS_BYTES = 16 * 1024
#: sensors named in one status
MAX_SENSORS = 128
#: text fields (versions, sensor names, last errors) are clipped to this on the gateway
MAX_TEXT = 200
#: counters and sizes: exact in a float, so InfluxDB and Prometheus keep them as sent
MAX_COUNT = 2**53

#: why a status was refused, the label of the collector's counter
StatusReason = Literal["too_large", "invalid_json", "bad_field"]
STATUS_REASONS: tuple[StatusReason, ...] = ("too_large", "invalid_json", "bad_field")

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seconds = Annotated[float, Field(ge=0, le=1e11)]  # durations and Unix times before year 5138
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\x00-\x1f\x7f]*$")]


class StatusRejected(FormatError):
    """A status message that is not one: ``reason`` is one of :data:`STATUS_REASONS`."""

    def __init__(self, reason: StatusReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: StatusReason = reason
        self.detail = detail


class _Strict(BaseModel):
    # strict: 1.0 is not an int, "1" is not a number, 1 is not a bool; unknown keys are
    # ignored (a newer gateway may say more), their size is bounded by MAX_STATUS_BYTES
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="ignore")


class SensorHealth(_Strict):
    errors: Count = 0
    last_error: Text = ""


class ClockState(_Strict):
    plausible: bool
    #: None: the gateway cannot ask its kernel (not Linux)
    synced: bool | None = None


class GatewayStatus(_Strict):
    """What a gateway says about itself. Only ``online`` is required: the Last Will (sent by the
    broker when the gateway vanishes) carries little more."""

    online: bool
    gateway: Text | None = None
    version: Text = ""
    boot: Count | None = None
    uptime_s: Seconds | None = None
    last_publish: Seconds | None = None
    clock: Seconds | None = None
    clock_state: ClockState | None = None
    spool_depth: Count | None = None
    unconfirmed: Count | None = None
    spool_oldest_age_s: Seconds | None = None
    dropped_messages: Count | None = None
    next_seq: Count | None = None
    spool_errors: Count | None = None
    spool_writable: bool | None = None
    spool_error: Text | None = None
    held_in_memory: Count | None = None
    unspooled_dropped_readings: Count | None = None
    sensors: Annotated[dict[Text, SensorHealth], Field(max_length=MAX_SENSORS)] = Field(
        default_factory=dict
    )

    @property
    def sensor_errors(self) -> int:
        return sum(s.errors for s in self.sensors.values())


#: what an empty retained message means: the status was cleared, the gateway is not online
OFFLINE = GatewayStatus(online=False)


def parse_status(payload: bytes) -> GatewayStatus:
    """The status in ``payload``, or :class:`StatusRejected`. An empty payload (a cleared
    retained message) is :data:`OFFLINE`. Never raises anything else, whatever the bytes."""
    if not payload:
        return OFFLINE
    if len(payload) > MAX_STATUS_BYTES:
        raise StatusRejected(
            "too_large", f"{len(payload)} bytes, more than the {MAX_STATUS_BYTES} a status may have"
        )
    try:
        return GatewayStatus.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "json_invalid":
            # pydantic's parser stops at 200 levels of nesting, with this same error type
            raise StatusRejected("invalid_json", first["msg"]) from None
        if first["type"] == "model_type" and not where:
            raise StatusRejected("bad_field", "not a JSON object") from None
        raise StatusRejected("bad_field", f"{where or 'status'}: {first['msg']}") from None
    except RecursionError:  # not seen with pydantic 2.14; a bound that must hold regardless
        raise StatusRejected("invalid_json", "nested too deeply") from None


def clip_text(text: str) -> str:
    """``text`` as a status may carry it: control characters as spaces, at most MAX_TEXT long."""
    cleaned = "".join(" " if ord(c) < 0x20 or c == "\x7f" else c for c in text)
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[: MAX_TEXT - 1] + "…"


def encode_status(fields: dict[str, Any]) -> bytes:
    """The gateway's side: ``fields`` checked by the same model a collector reads with, as the
    JSON the gateway publishes. Raises pydantic's ValidationError on a gateway bug."""
    return GatewayStatus.model_validate(fields).model_dump_json(exclude_none=True).encode()
