"""Start real Mosquitto and InfluxDB processes on free loopback ports, for the demo and tests.

Each service lives in its own directory (config, data, log) and can be stopped and started again
on the same port with its data kept, which is how tests take a broker or database away and give
it back. Nothing here listens beyond 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from fieldproof.errors import FieldproofError


class ServiceError(FieldproofError):
    """A service could not be started; the message says which binary and where its log is."""


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux default otherwise)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, chosen outside the kernel's
    ephemeral range when it can be: a service restarted on its port (a broker stopped and
    started again) must not find it taken as the local end of some client's connection, which
    the kernel hands out from that range.

    Another process (a parallel test worker) may take it before the service binds it: the
    services below then choose again, see :meth:`ManagedProcess.start`."""
    lo, hi = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if not lo <= p <= hi]
    for port in random.sample(candidates, min(50, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
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


#: how many ports a first start tries when the one it chose was taken by someone else meanwhile
_PORT_ATTEMPTS = 5


class ManagedProcess:
    """A child process with a start/stop life cycle and a readiness check.

    Without a given ``port`` it picks a free one; when another process takes that port before
    the first start binds it, ``start()`` picks another, so read ``port`` (and ``url``) after
    ``start()``. Later starts keep the port: clients already know it."""

    name = "service"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port_given = port is not None
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"
        self.has_started = False

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def ports(self) -> list[int]:
        """Every port the service binds (a subclass with more than one adds its others)."""
        return [self.port]

    def choose_new_ports(self) -> bool:
        """Pick fresh free ports for those this object chose itself; False if it chose none."""
        if self.port_given:
            return False
        self.port = free_port()
        return True

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until ready. On the first start, a port found taken (someone listens
        there already, or the service exits saying so) is chosen again, up to a few times."""
        if self.running:
            return
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            may_choose_again = not self.has_started and attempt < _PORT_ATTEMPTS
            # someone listening there already would pass for this service being ready
            busy = [p for p in self.ports() if _tcp_open(p)] if not self.has_started else []
            if busy:
                if may_choose_again and self.choose_new_ports():
                    continue
                raise ServiceError(
                    f"{self.name} cannot start: port {busy[0]} on 127.0.0.1 is already in use by "
                    "another process; give it a free port (or none: it then picks one)"
                )
            log_start = self._log_size()
            try:
                self._spawn_until_ready(timeout)
            except ServiceError:
                if may_choose_again and self._bind_failed_since(log_start):
                    self.proc = None
                    if self.choose_new_ports():
                        continue
                raise
            self.has_started = True
            return

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _bind_failed_since(self, offset: int) -> bool:
        """Whether the log, from ``offset`` on, says a port was taken (EADDRINUSE)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                text = f.read(1 << 20).decode(errors="replace").lower()
        except OSError:
            return False
        return "address already in use" in text

    def _spawn_until_ready(self, timeout: float) -> None:
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
            # ready, and still ours: a service that lost its port to another listener exits
            if self.is_ready() and self.proc.poll() is None:
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

    def __enter__(self) -> Self:
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

    def ports(self) -> list[int]:
        return [self.port, self.rpc_port]

    def choose_new_ports(self) -> bool:
        self.rpc_port = free_port()  # always chosen here
        super().choose_new_ports()
        return True

    def http_settings(self) -> str:
        """Lines added to the ``[http]`` section (a subclass's auth, Flux)."""
        return ""

    def command(self) -> list[str]:
        d = self.workdir
        config = d / "influxdb.conf"
        config.write_text(
            f"""# written by fieldproof.services for a loopback test/demo InfluxDB
reporting-disabled = true
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
{self.http_settings()}[continuous_queries]
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


# --------------------------------------------------------------------------- real peers
#
# Peers that Debian does not ship (or ships too old) are built from the Go module proxy at
# pinned versions by scripts/peers, into a cache outside the repository. The versions are
# pinned once, at the top of scripts/peers; peer_binary() reads them from there.

PEERS_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "peers"

#: peer name -> (version variable in scripts/peers, cache directory prefix, binary name)
_PEERS: dict[str, tuple[str, str, str]] = {
    "thor": ("THOR_VERSION", "thor", "thor"),
    "influxd": ("INFLUXDB_VERSION", "influxdb", "influxd"),
    "litewitness": ("TORCHWOOD_VERSION", "litewitness", "litewitness"),
    "witnessctl": ("TORCHWOOD_VERSION", "litewitness", "witnessctl"),
}
_PEER_ALIASES = {"influxdb": "influxd"}


class PeerMissing(ServiceError):
    """A peer binary that scripts/peers builds is not in the cache."""


def peers_dir() -> Path:
    """Where scripts/peers puts its builds: ``$FIELDPROOF_PEERS`` or ~/.cache/fieldproof/peers."""
    explicit = os.environ.get("FIELDPROOF_PEERS")
    return Path(explicit) if explicit else Path.home() / ".cache" / "fieldproof" / "peers"


def peer_version(name: str) -> str:
    """The version of a peer pinned in scripts/peers, e.g. ``v2.4.4`` for ``thor``."""
    name = _PEER_ALIASES.get(name, name)
    if name not in _PEERS:
        raise ServiceError(f"unknown peer {name!r} (known: {', '.join(sorted(_PEERS))})")
    variable = _PEERS[name][0]
    try:
        text = PEERS_SCRIPT.read_text()
    except OSError:
        raise ServiceError(
            f"{PEERS_SCRIPT} is missing: the real peers are pinned and built there, in a source "
            "checkout of fieldproof"
        ) from None
    for line in text.splitlines():
        if line.startswith(variable + "="):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise ServiceError(f"{PEERS_SCRIPT} pins no {variable}")


def peer_binary(name: str) -> Path:
    """Path of a peer built by scripts/peers (``thor`` or ``influxd``) at its pinned version.

    Raises :class:`PeerMissing`, naming scripts/peers, when it has not been built."""
    name = _PEER_ALIASES.get(name, name)
    version = peer_version(name)
    _, prefix, binary = _PEERS[name]
    path = peers_dir() / f"{prefix}-{version}" / binary
    if not os.access(path, os.X_OK):
        raise PeerMissing(
            f"{name} {version} is not built: {path} does not exist. Run scripts/peers (it builds "
            "the pinned peers from the Go module proxy; needs Go >= 1.26.5 and, for thor, gcc). "
            "scripts/test runs it through scripts/bootstrap."
        )
    return path


@dataclass(frozen=True)
class ThorGenesis:
    """What a Thor node says about its genesis block: the id and the chain tag (its last byte)."""

    id: str
    chain_tag: int


class ThorSolo(ManagedProcess):
    """A real VeChainThor node (``thor solo``, built by scripts/peers) on a free loopback port.

    ``--on-demand``: a tx is packed into a new block as soon as it is posted (the block's
    timestamp may run ahead of the clock); thor v2.4.4 also packs block 1 at start (a
    ``Params.set`` tx of its own) and an empty block every 10 s. The chain lives in memory, so
    every start is a fresh chain on the same devnet genesis; with ``persist`` it is kept in
    ``<workdir>/data`` across stop/start. Only the API port is bound: metrics, admin and pprof
    are off, and solo mode has no P2P. Funded accounts: the ten dev keys of thor's
    ``genesis/devnet.go``. Finality as thor v2.4.4 computes it in solo: ``/blocks/finalized`` is
    genesis until best reaches 360, then ``floor(best/180)*180 - 360``; an anchor in block b is
    final once best reaches ``ceil((b+360)/180)*180`` (on demand: one block per posted tx)."""

    name = "thor"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persist: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(workdir, port)
        self.binary = str(peer_binary("thor"))
        self.persist = persist
        self.extra_args = tuple(extra_args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        # Flags are given explicitly (not left to defaults) so THOR_* variables in the
        # environment cannot turn on a server on a fixed port.
        cmd = [
            self.binary,
            "solo",
            "--on-demand",
            "--api-addr",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.workdir / "data"),
            "--cache",
            "256",
            "--enable-metrics=false",
            "--enable-admin=false",
            "--pprof=false",
            "--persist=" + ("true" if self.persist else "false"),
            "--verbosity",
            "3",
        ]
        return cmd + list(self.extra_args)

    def best_number(self) -> int | None:
        """Number of the best block, or None if the API does not answer (yet)."""
        try:
            r = httpx.get(f"{self.url}/blocks/best", timeout=0.5)
            if r.status_code != 200:
                return None
            number = r.json().get("number")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return number if isinstance(number, int) else None

    def is_ready(self) -> bool:
        # Block 1 (thor's own start-up tx) is packed right after the API comes up; waiting
        # for it means the node is past its initialisation when start() returns.
        n = self.best_number()
        return n is not None and n >= 1

    def genesis(self) -> ThorGenesis:
        """Genesis id and chain tag as the running node reports them (``GET /blocks/0``)."""
        r = httpx.get(f"{self.url}/blocks/0", timeout=10)
        r.raise_for_status()
        block_id = r.json()["id"]
        if not (isinstance(block_id, str) and block_id.startswith("0x") and len(block_id) == 66):
            raise ServiceError(f"thor at {self.url} gave a malformed genesis id: {block_id!r}")
        return ThorGenesis(id=block_id.lower(), chain_tag=int(block_id[-2:], 16))


def _influxql_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _influxql_ident(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxDB18(InfluxDB):
    """InfluxDB 1.8 (built by scripts/peers): the 1.x server with the 2.x compatibility API
    (``/api/v2/write`` with token ``user:password`` and bucket ``db/rp``, Flux on
    ``/api/v2/query``), on free loopback ports, with its own data directory.

    With ``auth=(user, password)`` authentication is on and ``start()`` creates that admin
    user, as the 1.8 documentation says to: with auth enabled and no user yet, the server
    accepts exactly one kind of query, ``CREATE USER … WITH ALL PRIVILEGES``. The user is kept
    in the meta directory, so a later start with the same workdir finds it."""

    name = "influxd"

    def __init__(
        self, workdir: Path, port: int | None = None, *, auth: tuple[str, str] | None = None
    ) -> None:
        # Not InfluxDB.__init__: that one needs Debian's influxd on PATH.
        ManagedProcess.__init__(self, workdir, port)
        self.binary = str(peer_binary("influxd"))
        self.rpc_port = free_port()
        self.auth = auth

    @property
    def token(self) -> str:
        """The v2-API token 1.8 expects: ``user:password`` (empty without auth).

        1.8 splits the ``Authorization: Token …`` header on spaces, so a password with a space
        cannot be used this way (401 "unable to parse authentication credentials")."""
        return f"{self.auth[0]}:{self.auth[1]}" if self.auth else ""

    def http_settings(self) -> str:
        auth = "true" if self.auth else "false"
        return f"  auth-enabled = {auth}\n  flux-enabled = true\n  flux-log-enabled = false\n"

    def start(self, timeout: float = 30.0) -> None:
        was_running = self.running
        super().start(timeout)
        if self.auth and not was_running:
            self._ensure_admin()

    def _ensure_admin(self) -> None:
        assert self.auth is not None
        user, password = self.auth
        q = (
            f"CREATE USER {_influxql_ident(user)} WITH PASSWORD {_influxql_string(password)} "
            "WITH ALL PRIVILEGES"
        )
        r = httpx.post(f"{self.url}/query", data={"q": q}, timeout=10)
        if r.status_code == 401:  # users exist already (a restart): the credentials must work
            r = httpx.get(
                f"{self.url}/query", params={"q": "SHOW USERS"}, auth=self.auth, timeout=10
            )
        try:
            ok = r.status_code == 200 and "error" not in r.json()["results"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            raise ServiceError(
                f"cannot set up admin user {user!r} on {self.url}: {r.status_code} {r.text.strip()}"
            )

    def query(self, q: str, db: str = "fieldproof") -> list[dict[str, object]]:
        """Run InfluxQL (as the admin user when auth is on); series of the first statement."""
        r = httpx.post(
            f"{self.url}/query",
            data={"db": db, "q": q, "epoch": "ns"},
            auth=self.auth,
            timeout=30,
        )
        r.raise_for_status()
        result = r.json()["results"][0]
        if "error" in result:
            raise ServiceError(f"InfluxQL error for {q!r}: {result['error']}")
        series: list[dict[str, object]] = result.get("series", [])
        return series

    def create_database(self, db: str = "fieldproof") -> None:
        self.query(f"CREATE DATABASE {_influxql_ident(db)}", db="")


class Litewitness(ManagedProcess):
    """A real C2SP tlog-witness: torchwood's ``litewitness`` (built by scripts/peers) on a free
    loopback port, with its own SQLite database and its own ``ssh-agent`` holding its Ed25519
    key (made with ``ssh-keygen`` on first start, kept in the workdir). ``logs`` are
    ``(origin, vkey)`` pairs registered with ``witnessctl add-log`` / ``add-key`` before the
    first start; :meth:`add_log` registers more (witnessctl works while it runs).

    ``stop()``/``start()`` take the witness away and give it back on the same port with its
    database (the sizes it has cosigned) kept; ``close()`` also ends its ssh-agent."""

    name = "litewitness"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        witness_name: str = "witness.fieldproof.example/w1",
        logs: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(workdir, port)
        self.binary = str(peer_binary("litewitness"))
        self.witnessctl = str(peer_binary("witnessctl"))
        self.ssh_keygen = _find_binary("ssh-keygen", "openssh-client")
        self.ssh_agent = _find_binary("ssh-agent", "openssh-client")
        self.ssh_add = _find_binary("ssh-add", "openssh-client")
        self.witness_name = witness_name
        self.db_path = self.workdir / "litewitness.db"
        self.key_path = self.workdir / "witness_ed25519"
        # a unix socket path is limited to 107 bytes: keep it short, outside the workdir
        self._sock_dir = Path(tempfile.mkdtemp(prefix="fp-lw-", dir="/tmp"))
        self.agent_socket = self._sock_dir / "agent.sock"
        self.agent: subprocess.Popen[bytes] | None = None
        self._ensure_key()
        for origin, vkey in logs:
            self.add_log(origin, vkey)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, *cmd: str, env: dict[str, str] | None = None) -> str:
        r = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL
        )
        if r.returncode != 0:
            raise ServiceError(f"{Path(cmd[0]).name} {cmd[1]} failed: {r.stderr.strip()}")
        return r.stdout

    def _ensure_key(self) -> None:
        if not self.key_path.exists():
            self._run(
                self.ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "litewitness",
                "-f", str(self.key_path),
            )  # fmt: skip
        fields = (self.key_path.with_suffix(".pub")).read_text().split()
        blob = base64.b64decode(fields[1])
        # SSH wire format: string "ssh-ed25519", string <32-byte key>
        if fields[0] != "ssh-ed25519" or len(blob) != 4 + 11 + 4 + 32:
            raise ServiceError(f"{self.key_path}.pub is not an Ed25519 key")
        self.public_key = blob[-32:]
        out = self._run(self.ssh_keygen, "-l", "-E", "sha256", "-f", str(self.key_path))
        self.fingerprint = out.split()[1]  # "256 SHA256:… comment (ED25519)"

    @property
    def vkey(self) -> str:
        """Its cosignature/v1 verifier key: ``name+hexid+base64(0x04 ‖ public key)``."""
        digest = hashlib.sha256(
            self.witness_name.encode() + b"\n" + b"\x04" + self.public_key
        ).digest()
        b64 = base64.b64encode(b"\x04" + self.public_key).decode()
        return f"{self.witness_name}+{digest[:4].hex()}+{b64}"

    def add_log(self, origin: str, vkey: str) -> None:
        """Register a log (its origin and note verifier key) with ``witnessctl``."""
        db = str(self.db_path)
        self._run(self.witnessctl, "add-log", "-db", db, "-origin", origin)
        self._run(self.witnessctl, "add-key", "-db", db, "-origin", origin, "-key", vkey)

    def list_logs(self) -> list[dict[str, object]]:
        """``witnessctl list-logs``: origin, size and root the witness has cosigned, per log."""
        out = self._run(self.witnessctl, "list-logs", "-db", str(self.db_path))
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def _start_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            return
        self.agent_socket.unlink(missing_ok=True)
        self.agent = subprocess.Popen(
            [self.ssh_agent, "-D", "-a", str(self.agent_socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        env = dict(os.environ, SSH_AUTH_SOCK=str(self.agent_socket))
        deadline = time.monotonic() + 10
        # the socket file appears at bind(), a moment before the agent listens: wait until
        # 'ssh-add -l' reaches it (exit 1: no keys yet; 2: no agent)
        while True:
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"ssh-agent did not start on {self.agent_socket}")
            if self.agent_socket.exists():
                probe = subprocess.run(
                    [self.ssh_add, "-l"], env=env, capture_output=True, stdin=subprocess.DEVNULL
                )
                if probe.returncode in (0, 1):
                    break
            time.sleep(0.02)
        self._run(self.ssh_add, "-q", str(self.key_path), env=env)

    def command(self) -> list[str]:
        return [
            self.binary,
            "-name", self.witness_name,
            "-db", str(self.db_path),
            "-ssh-agent", str(self.agent_socket),
            "-key", self.fingerprint,
            "-listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        self._start_agent()
        super().start(timeout)

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Stop litewitness and its ssh-agent (the key and database stay in the workdir)."""
        self.stop()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        self.agent = None
        shutil.rmtree(self._sock_dir, ignore_errors=True)

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
