"""The gateways' status messages as a collector keeps them: the latest per registered gateway,
and a count of those it ignored.

A status is unsigned and often retained (the broker hands it to every collector at every
start), so it is hostile input: each is parsed by :func:`~fieldproof.formats.status.parse_status`
(bounded, typed), kept only for a registered gateway, and one that is refused is counted and
logged once per interval per (reason, gateway) through the same summarising log as the
quarantine. :meth:`StatusBoard.take` never raises: the batch a status came in is acked
whatever it holds, and nothing a gateway writes there can reach the stats path unchecked."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from collector.ingest import Incoming, QuarantineLog, Rejected
from collector.points import Point
from collector.registry import Device
from fieldproof.errors import FieldproofError
from fieldproof.formats.status import STATUS_REASONS, GatewayStatus, StatusRejected, parse_status
from fieldproof.mqtt import gateway_from_topic

log = logging.getLogger("fieldproof.collector")

#: why a status message was ignored: the format's reasons, a gateway not in the registry, or a
#: failure of ours (logged with its traceback)
STATUS_IGNORED_REASONS = (*STATUS_REASONS, "unknown_gateway", "internal_error")


@dataclass(frozen=True, slots=True)
class SeenStatus:
    """A gateway's latest status as this collector took it, and when."""

    status: GatewayStatus
    received_at: float

    def clock_ok(self) -> int:
        """1 when the gateway says its clock is plausible and NTP-synchronised, and its clock
        agreed with ours to within two minutes when the status was received."""
        state, clock = self.status.clock_state, self.status.clock
        if state is not None and not (state.plausible and state.synced):
            return 0
        return int(clock is not None and abs(clock - self.received_at) < 120)


class _NotKept(FieldproofError):
    """A well-formed status the collector does not keep (its gateway is not registered)."""

    reason = "unknown_gateway"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StatusBoard:
    """The latest status of each registered gateway (``latest``) and what was ignored."""

    def __init__(self, topic_prefix: str, devices: Callable[[str], Device | None]) -> None:
        self.topic_prefix = topic_prefix
        self.devices = devices
        self.latest: dict[str, SeenStatus] = {}
        #: status messages ignored since start, by reason (STATUS_IGNORED_REASONS)
        self.ignored: Counter[str] = Counter()
        self._log = QuarantineLog(action="ignored", noun="status message")

    def take(self, items: Iterable[tuple[str, bytes, float]]) -> None:
        """Take ``(topic, payload, received_at)`` status messages. Never raises."""
        ignored: list[Rejected] = []
        for topic, payload, received_at in items:
            gateway: str | None = None
            try:
                parsed = gateway_from_topic(self.topic_prefix, topic)
                gateway = parsed[0] if parsed else None
                status = parse_status(payload)
                if gateway is None or self.devices(gateway) is None:
                    raise _NotKept("no registered gateway has this topic")
                self.latest[gateway] = SeenStatus(status, received_at)
            except (StatusRejected, _NotKept) as exc:
                ignored.append(_rejected(topic, received_at, gateway, exc.reason, exc.detail))
            except Exception as exc:
                log.exception("status message on %s could not be taken", topic)
                ignored.append(_rejected(topic, received_at, gateway, "internal_error", repr(exc)))
        for r in ignored:
            self.ignored[r.reason] += 1
        self._log.report(ignored)

    def points(self, collector_id: str, now_ns: int) -> list[Point]:
        """The ``status_ignored`` counters and a ``gateway_status`` point per gateway."""
        points = [
            Point("status_ignored", {"collector": collector_id, "reason": r}, {"total": n}, now_ns)
            for r, n in sorted(self.ignored.items())
        ]
        now = time.time()
        for gw, seen in self.latest.items():
            device = self.devices(gw)
            if device is None:  # revoked or removed since
                continue
            st = seen.status
            points.append(
                Point(
                    "gateway_status",
                    {"farm": device.farm, "field": device.field, "gateway": gw},
                    {
                        "online": int(st.online),
                        "uptime_s": float(st.uptime_s or 0.0),
                        "spool_depth": st.spool_depth or 0,
                        "sensor_errors": st.sensor_errors,
                        "last_publish_age_s": now - st.last_publish if st.last_publish else -1.0,
                        "clock_ok": seen.clock_ok(),
                        "version": st.version,
                    },
                    now_ns,
                )
            )
        return points


def _rejected(
    topic: str, received_at: float, gateway: str | None, reason: str, detail: str
) -> Rejected:
    return Rejected(Incoming(topic, b"", received_at), gateway, reason, detail)
