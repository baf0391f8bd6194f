"""Services choose their free port again when another process takes it first, as a parallel
test worker can between ``free_port()`` and the service's own bind; a port the caller gave is
never silently changed, and a restart keeps the port clients know."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldproof.services import InfluxDB, Mosquitto, ServiceError

pytestmark = pytest.mark.integration


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """A port bound but not listening: invisible to a connect probe, yet a bind there fails
    with EADDRINUSE, which is what a service sees when it loses the race."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port someone already listens on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s
    finally:
        s.close()


def _port(s: socket.socket) -> int:
    return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_broker_that_loses_its_port_at_bind_moves_to_another(
    tmp_path: Path, squatter: socket.socket
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.port = taken = _port(squatter)  # as if another worker bound it after free_port()
    broker.start()
    try:
        assert broker.running
        assert broker.port != taken
        assert _accepts(broker.port)
        assert "address already in use" in broker.log_path.read_text().lower()
    finally:
        broker.stop()


def test_port_someone_listens_on_is_not_mistaken_for_ready(
    tmp_path: Path, listener: socket.socket
) -> None:
    influx = InfluxDB(tmp_path / "influxdb")
    influx.port = taken = _port(listener)
    influx.start()
    try:
        assert influx.port != taken
        assert influx.is_ready()  # its own /ping, not the other listener
    finally:
        influx.stop()


def test_given_port_is_kept_and_a_taken_one_fails(
    tmp_path: Path, squatter: socket.socket
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", port=_port(squatter))
    with pytest.raises(ServiceError, match="exited with code"):
        broker.start(timeout=10)
    assert broker.port == _port(squatter)


def test_restart_keeps_the_port(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        port = broker.port
        broker.stop()
        broker.start()
        assert broker.port == port
        assert _accepts(port)
    finally:
        broker.stop()


def test_given_port_someone_listens_on_is_refused_not_taken_for_ready(
    tmp_path: Path, listener: socket.socket
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", port=_port(listener))
    with pytest.raises(ServiceError, match="already in use by another process"):
        broker.start(timeout=10)
    assert not broker.running


def test_free_ports_are_chosen_outside_the_ephemeral_range() -> None:
    """A port the kernel may hand to a client's connection as its local end is a poor choice
    for a service that restarts on it; free_port picks below the range, and the port binds."""
    from fieldproof.services import _ephemeral_range, free_port

    lo, hi = _ephemeral_range()
    ports = {free_port() for _ in range(20)}
    assert all(not lo <= p <= hi for p in ports), (ports, lo, hi)
    assert len(ports) > 1  # random, so parallel workers rarely collide
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))
