"""Start real Mosquitto and InfluxDB processes on free loopback ports, for the demo and tests.

Each service lives in its own directory (config, data, log) and can be stopped and started again
on the same port with its data kept, which is how tests take a broker or database away and give
it back. Nothing here listens beyond 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx


class ServiceError(RuntimeError):
    """A service could not be started; the message says which binary and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_binary(name: str, debian_package: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(
        f"'{name}' is not installed. Install the Debian package: apt-get install {debian_package}"
        " (scripts/bootstrap does this when run as root)."
    )


class ManagedProcess:
    """A child process with a start/stop life cycle and a readiness check."""

    name = "service"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.proc.returncode} at start; "
                    f"see {self.log_path}:\n{self.tail_log()}"
                )
            if self.is_ready():
                return
            time.sleep(0.05)
        self.kill()
        raise ServiceError(
            f"{self.name} did not become ready in {timeout:.0f} s; see {self.log_path}"
        )

    def tail_log(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """Crash stop (SIGKILL), as a power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto(ManagedProcess):
    """An Eclipse Mosquitto 2 broker on loopback, persistent, with queues large enough that a
    collector offline for a while loses nothing (Mosquitto's default queue is 1000 messages)."""

    name = "mosquitto"

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        super().__init__(workdir, port)
        self.binary = _find_binary("mosquitto", "mosquitto")
        self.extra_config = extra_config

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def command(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        # As root, Mosquitto drops to the 'mosquitto' user and then cannot save into our
        # directory; a throwaway loopback broker may stay root.
        run_as = "user root" if os.geteuid() == 0 else ""
        self.config_path.write_text(
            f"""# written by fieldproof.services for a loopback test/demo broker
listener {self.port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 30
max_queued_messages 1000000
max_inflight_messages 100
max_packet_size 131072
log_dest stdout
log_type error
log_type warning
log_type notice
{run_as}
{self.extra_config}
"""
        )
        return [self.binary, "-c", str(self.config_path)]

    def is_ready(self) -> bool:
        return _tcp_open(self.port)


class InfluxDB(ManagedProcess):
    """An InfluxDB 1.x server (Debian's ``influxdb``) on loopback with its own data directory."""

    name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.binary = _find_binary("influxd", "influxdb")
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        d = self.workdir
        config = d / "influxdb.conf"
        config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  index-version = "inmem"
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  pprof-enabled = false
  max-body-size = 50000000
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""
        )
        return [self.binary, "-config", str(config)]

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204
        except httpx.HTTPError:
            return False

    def query(self, q: str, db: str = "fieldproof") -> list[dict[str, object]]:
        """Run InfluxQL and return the series of the first statement ([] when empty)."""
        r = httpx.get(f"{self.url}/query", params={"db": db, "q": q, "epoch": "ns"}, timeout=30)
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise ServiceError(f"InfluxQL error for {q!r}: {result['error']}")
        series: list[dict[str, object]] = result.get("series", [])
        return series
