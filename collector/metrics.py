"""Prometheus ``/metrics`` and ``/healthz`` for the collector, on a loopback port.

Why both: Grafana dashboards show the data; an operator's alerting must also know when the
*pipeline* is unwell — the broker connection dropped, InfluxDB refusing, a backlog growing,
gateways with sequence gaps, checkpoints not being anchored, the CRL about to expire (an expired
CRL makes the broker refuse every gateway). ``/healthz`` answers a load balancer, systemd or
Docker health check in one status code.

Values are read when scraped: counters from the collector's SQLite database through a
read-only connection of our own (the collector's connection stays in its worker thread), live
state (connection, backlog, lag) from the collector object. Start it from ``Collector.run``::

    self.metrics = start_metrics_server(self)   # None unless [metrics] port is set
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry

from anchor.witness import FAILURES, WitnessStats
from collector.ingest import QUARANTINE_REASONS
from collector.seqranges import ReceivedRanges
from collector.status import STATUS_IGNORED_REASONS, StatusBoard
from fieldproof.config import CollectorConfig

log = logging.getLogger("fieldproof.metrics")

#: gaps need a scan of the dedupe table: computed at most this often


class _Witnesses(Protocol):
    def stats(self) -> list[WitnessStats]: ...


class _Ingestor(Protocol):
    @property
    def influx_down_since(self) -> float | None: ...


class CollectorLike(Protocol):
    """What the metrics read from :class:`collector.service.Collector` (read-only)."""

    @property
    def config(self) -> CollectorConfig: ...
    @property
    def connected(self) -> threading.Event: ...
    @property
    def lag_s(self) -> float: ...
    def backlog(self) -> int: ...
    @property
    def status(self) -> StatusBoard: ...
    @property
    def ingestor(self) -> _Ingestor: ...
    @property
    def received(self) -> ReceivedRanges: ...
    @property
    def witnesses(self) -> _Witnesses: ...


class CollectorMetrics(PromCollector):
    """A prometheus_client custom collector: everything computed at scrape time."""

    def __init__(self, collector: CollectorLike, clock: Any = time.time) -> None:
        self.collector = collector
        self.clock = clock
        cfg = collector.config
        self.db_path = cfg.db_path
        self.anchor_db = cfg.metrics.anchor_db
        # the CRL the broker reads ([enrollment] crl_copy) is the one whose expiry locks every
        # client out; the CA directory's own copy only when no other is configured
        self.crl_path = cfg.enrollment.crl_copy or (
            (cfg.enrollment.ca_dir or cfg.data_dir / "ca") / "crl.pem"
        )
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._down_since: float | None = None
        self._started = clock()

    # ------------------------------------------------------------------ database access

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(
                f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False, timeout=5
            )
        return self._db

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows, or [] when a table does not exist yet (fresh database)."""
        with self._lock:
            try:
                return list(self._conn().execute(sql, args).fetchall())
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ pieces

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self._query("SELECT name, value FROM counters")}

    def gaps(self) -> tuple[int, int]:
        """(gap ranges, missing messages) over all gateways, as the collector tracks them."""
        received = self.collector.received
        return received.gap_ranges, received.missing_messages

    def log_state(self) -> tuple[int, int, float | None]:
        """(log size, latest checkpoint size, latest checkpoint time)."""
        size_rows = self._query("SELECT max(idx) FROM fp_log_entries")
        size = 0 if not size_rows or size_rows[0][0] is None else int(size_rows[0][0]) + 1
        cp = self._query("SELECT size, created_at FROM checkpoints ORDER BY size DESC LIMIT 1")
        if not cp:
            return size, 0, None
        return size, int(cp[0][0]), float(cp[0][1])

    def anchor_state(self) -> tuple[dict[str, int], int, float | None] | None:
        """(anchors per state, largest finalized tree size, when) from the anchorer's db."""
        if self.anchor_db is None or not Path(self.anchor_db).exists():
            return None
        db = sqlite3.connect(f"file:{self.anchor_db}?mode=ro", uri=True, timeout=5)
        try:
            states = {str(s): int(n) for s, n in db.execute(
                "SELECT state, count(*) FROM anchors GROUP BY state"
            )}  # fmt: skip
            row = db.execute(
                "SELECT max(tree_size), max(finalized_at) FROM anchors WHERE state='finalized'"
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            db.close()
        return states, int(row[0] or 0), None if row[1] is None else float(row[1])

    def crl_seconds_left(self) -> float | None:
        if not self.crl_path.exists():
            return None
        from cryptography import x509

        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except (OSError, ValueError):
            return None
        nxt = crl.next_update_utc
        return None if nxt is None else nxt.timestamp() - self.clock()

    # ------------------------------------------------------------------ health

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, details). Unhealthy: broker connection down, or InfluxDB refusing, for
        longer than [metrics] unhealthy_after_s; or the database unreadable."""
        c = self.collector
        now = self.clock()
        limit = c.config.metrics.unhealthy_after_s
        connected = c.connected.is_set()
        if connected:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        down_for = 0.0 if connected else now - max(self._down_since or now, self._started)
        influx_since = c.ingestor.influx_down_since
        influx_down_for = 0.0 if influx_since is None else now - influx_since
        problems = []
        if down_for > limit:
            problems.append(f"broker connection down for {down_for:.0f} s")
        if influx_down_for > limit:
            problems.append(f"InfluxDB unavailable for {influx_down_for:.0f} s")
        try:
            self._query("SELECT 1")
        except sqlite3.Error as exc:
            problems.append(f"database unreadable: {exc}")
        details = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "collector": c.config.collector_id,
            "mqtt_connected": connected,
            "influx_ok": influx_since is None,
            "backlog": c.backlog(),
            "lag_s": round(float(c.lag_s), 3),
        }
        return not problems, details

    # ------------------------------------------------------------------ prometheus

    def collect(self) -> Iterator[Metric]:
        c = self.collector
        now = self.clock()
        counters = self.counters()
        yield CounterMetricFamily(
            "fieldproof_accepted_messages",
            "Messages verified and stored (deduplicated)",
            value=counters.get("accepted", 0),
        )
        q = CounterMetricFamily(
            "fieldproof_quarantined_messages", "Messages refused, by reason", labels=["reason"]
        )
        for reason in sorted(
            set(QUARANTINE_REASONS)
            | {k.split(":", 1)[1] for k in counters if k.startswith("quarantined:")}
        ):
            q.add_metric([reason], counters.get(f"quarantined:{reason}", 0))
        yield q
        yield CounterMetricFamily(
            "fieldproof_influx_refused_points",
            "Points InfluxDB refused outright (kept in the log, not in InfluxDB)",
            value=counters.get("influx_refused", 0),
        )
        ranges, missing = self.gaps()
        yield GaugeMetricFamily(
            "fieldproof_sequence_gaps",
            "Ranges of sequence numbers this collector never received (with several collectors "
            "on one shared subscription, the others' share counts too)",
            value=ranges,
        )
        yield GaugeMetricFamily(
            "fieldproof_missing_messages", "Messages missing inside those gaps", value=missing
        )
        yield GaugeMetricFamily(
            "fieldproof_ingest_lag_seconds",
            "Age of the newest sample in the last batch when it was stored",
            value=float(c.lag_s),
        )
        yield GaugeMetricFamily(
            "fieldproof_backlog_messages",
            "Messages received and waiting to be processed",
            value=c.backlog(),
        )
        yield GaugeMetricFamily(
            "fieldproof_mqtt_connected",
            "1 when connected to the broker",
            value=int(c.connected.is_set()),
        )
        yield GaugeMetricFamily(
            "fieldproof_influx_up",
            "1 unless InfluxDB writes are failing",
            value=int(c.ingestor.influx_down_since is None),
        )
        size, cp_size, cp_at = self.log_state()
        yield GaugeMetricFamily("fieldproof_log_entries", "Evidence log size", value=size)
        yield GaugeMetricFamily(
            "fieldproof_checkpoint_entries", "Log size of the latest checkpoint", value=cp_size
        )
        if cp_at is not None:
            yield GaugeMetricFamily(
                "fieldproof_checkpoint_age_seconds",
                "Seconds since the latest checkpoint was signed",
                value=now - cp_at,
            )
        anchors = self.anchor_state()
        if anchors is not None:
            states, finalized_size, finalized_at = anchors
            g = GaugeMetricFamily("fieldproof_anchors", "Anchors by state", labels=["state"])
            for state in ("pending", "included", "finalized", "failed"):
                g.add_metric([state], states.get(state, 0))
            yield g
            yield GaugeMetricFamily(
                "fieldproof_anchored_entries",
                "Log size covered by the newest finalized anchor",
                value=finalized_size,
            )
            yield GaugeMetricFamily(
                "fieldproof_unanchored_entries",
                "Log entries not yet covered by a finalized anchor",
                value=max(0, size - finalized_size),
            )
            if finalized_at is not None:
                yield GaugeMetricFamily(
                    "fieldproof_anchor_finalized_age_seconds",
                    "Seconds since an anchor was last finalized",
                    value=now - finalized_at,
                )
        devices = GaugeMetricFamily("fieldproof_devices", "Registered gateways", labels=["status"])
        by_status = dict(self._query("SELECT status, count(*) FROM devices GROUP BY status"))
        for status in ("active", "revoked"):
            devices.add_metric([status], int(by_status.get(status, 0)))
        yield devices
        online = GaugeMetricFamily(
            "fieldproof_gateway_online", "Gateway status says online", labels=["gateway"]
        )
        depth = GaugeMetricFamily(
            "fieldproof_gateway_spool_messages", "Messages in a gateway's spool", labels=["gateway"]
        )
        seen = GaugeMetricFamily(
            "fieldproof_gateway_status_age_seconds",
            "Seconds since a gateway's last status message",
            labels=["gateway"],
        )
        for gw, st in sorted(c.status.latest.items()):
            online.add_metric([gw], int(st.status.online))
            if st.status.spool_depth is not None:
                depth.add_metric([gw], st.status.spool_depth)
            seen.add_metric([gw], now - st.received_at)
        yield online
        yield depth
        yield seen
        ignored = CounterMetricFamily(
            "fieldproof_status_ignored",
            "Gateway status messages ignored since the collector started, by reason "
            "(too_large, invalid_json, bad_field: the gateway sent something that is not a "
            "status; unknown_gateway: no registered gateway has the topic)",
            labels=["reason"],
        )
        for reason in STATUS_IGNORED_REASONS:
            ignored.add_metric([reason], c.status.ignored.get(reason, 0))
        yield ignored
        yield from self.witness_metrics()
        left = self.crl_seconds_left()
        if left is not None:
            yield GaugeMetricFamily(
                "fieldproof_crl_expiry_seconds",
                "Seconds until the broker's CRL expires (then it refuses every client)",
                value=left,
            )

    def witness_metrics(self) -> Iterator[Metric]:
        """Per configured witness, since the collector started (none: no family is sent)."""
        stats = self.collector.witnesses.stats()
        if not stats:
            return
        requests = CounterMetricFamily(
            "fieldproof_witness_requests",
            "add-checkpoint requests sent to a witness (a 409 retry is a second request)",
            labels=["witness"],
        )
        cosigned = CounterMetricFamily(
            "fieldproof_witness_cosignatures",
            "Cosignatures by a witness verified and added to a checkpoint note",
            labels=["witness"],
        )
        failures = CounterMetricFamily(
            "fieldproof_witness_failures",
            "Witness requests that brought no cosignature, by reason (unreachable, "
            "server_error, unknown_log, bad_signature, bad_request, bad_proof, conflict, "
            "bad_cosignature, not_stored, split_view: docs/evidence-log.md section 9)",
            labels=["witness", "reason"],
        )
        up = GaugeMetricFamily(
            "fieldproof_witness_ok",
            "1 when the witness's last answer was a valid cosignature (or it was not asked yet)",
            labels=["witness"],
        )
        last = GaugeMetricFamily(
            "fieldproof_witness_last_success_timestamp_seconds",
            "Unix time of the witness's last cosignature added since the collector started",
            labels=["witness"],
        )
        for w in stats:
            requests.add_metric([w.name], w.requests)
            cosigned.add_metric([w.name], w.cosignatures)
            for reason in FAILURES:
                failures.add_metric([w.name, reason], w.failures.get(reason, 0))
            up.add_metric([w.name], int(w.status == "ok"))
            if w.last_success is not None:
                last.add_metric([w.name], w.last_success)
        yield from (requests, cosigned, failures, up, last)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = generate_latest(self.server.registry)
            except sqlite3.Error as exc:
                self._send(503, f"database unreadable: {exc}\n".encode(), "text/plain")
                return
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, details = self.server.metrics.health()
            self._send(200 if ok else 503, json.dumps(details).encode() + b"\n", "application/json")
        else:
            self._send(404, b"try /metrics or /healthz\n", "text/plain")


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, metrics: CollectorMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics)
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.metrics.close()


def start_metrics_server(collector: CollectorLike, port: int | None = None) -> MetricsServer | None:
    """Serve /metrics and /healthz in a daemon thread on [metrics] host:port (``port``
    overrides; 0 = any free port). None when no port is configured or it cannot be bound —
    the collector keeps running either way (and logs why)."""
    cfg = collector.config.metrics
    port = cfg.port if port is None else port
    if port is None:
        return None
    try:
        server = MetricsServer(CollectorMetrics(collector), cfg.host, port)
    except OSError as exc:
        log.error(
            "cannot serve metrics on %s:%s: %s; set [metrics] port to a free port",
            cfg.host,
            port,
            exc.strerror,
        )
        return None
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics and /healthz", cfg.host, server.port)
    return server
