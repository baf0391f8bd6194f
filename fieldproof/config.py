"""Configuration files: TOML validated by pydantic, with environment overrides.

The base every room's config builds on (strict models, TOML loading, env overrides, the MQTT
settings both ends share) and the server's config (collector and anchorer); the gateway's own
is :mod:`gateway.config`. Every mistake is reported as ``file: key = value: what is allowed``
so a technician can fix it without reading code. Environment variables override the file, e.g.
``FIELDPROOF_GATEWAY__MQTT__HOST=broker.farm`` or ``FIELDPROOF_COLLECTOR__INFLUX__URL=…``."""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from fieldproof.errors import ConfigError
from fieldproof.formats.tiles import MAX_ENTRY_BYTES

#: The largest message a collector may accept (``max_message_bytes``: its default and upper
#: bound). An accepted message is logged as its exact bytes, and the log is published as C2SP
#: tlog-tiles, whose entry bundles give each entry a 16-bit length: a longer message could be
#: accepted and acknowledged, yet no tile could ever hold it, and publishing would stop there.
MAX_LOGGABLE_MESSAGE_BYTES = MAX_ENTRY_BYTES


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TlsConfig(StrictModel):
    """TLS for MQTT. Paths to PEM files; the client key never leaves the device."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_hostname_check: bool = False


class MqttConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password_env: str | None = Field(
        default=None, description="name of the environment variable holding the password"
    )
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    topic_prefix: str = "fieldproof/v1"


class InfluxConfig(StrictModel):
    """Where readings go. ``api = "v1"`` for InfluxDB 1.x ``/write``; ``"v2"`` for
    ``/api/v2/write``: 2.x/3.x/Cloud, and 1.8+ (token ``user:password``, bucket
    ``database[/retention-policy]``). Secrets are never in the file: ``password_env`` and
    ``token_env`` name environment variables. A 401/403 holds every batch (nothing is dropped)
    until the credentials work; the collector's log names the key to fix."""

    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    #: v1: the database written to (``bucket`` is the v2 name for it)
    database: str = "fieldproof"
    retention_policy: str = ""
    #: v1: HTTP Basic credentials; the password comes from the variable ``password_env`` names
    username: str | None = None
    password_env: str | None = None
    #: v2: organisation (ignored by 1.8) and bucket (1.8: "database" or "database/rp")
    org: str = ""
    bucket: str = "fieldproof"
    token_env: str | None = Field(default=None, description="env var holding the v2 API token")
    timeout_s: float = Field(default=10.0, gt=0)
    #: create a missing database (1.x, also through 1.8's v2 endpoint; needs an admin user).
    #: 2.x/3.x/Cloud buckets are never created: the collector says so and retries
    create_database: bool = True


class WitnessConfig(StrictModel):
    """A C2SP tlog-witness that cosigns the log's checkpoints (docs/evidence-log.md §9)."""

    #: the witness's name as in its cosignature lines (must equal the vkey's name)
    name: str = Field(min_length=1, max_length=200)
    #: base URL; the client POSTs to <url>/add-checkpoint
    url: str = Field(min_length=1, max_length=2000)
    #: its cosignature/v1 verifier key: name+hexid+base64(0x04 || Ed25519 public key)
    vkey: str = Field(min_length=1, max_length=1024)
    #: seconds for one request (connect, send, answer)
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: seconds before a witness that was down or refused is asked again
    retry_s: float = Field(default=60.0, ge=0)

    @pydantic.field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or any(c.isspace() for c in v):
            raise ValueError("a witness url is http:// or https:// without spaces")
        return v.rstrip("/")

    @pydantic.field_validator("vkey")
    @classmethod
    def _cosigner_vkey(cls, v: str) -> str:
        from fieldproof.formats.cosignature import CosignatureVerifier

        CosignatureVerifier.from_vkey(v)  # CosignatureError is a ValueError
        return v

    @pydantic.model_validator(mode="after")
    def _name_matches_vkey(self) -> WitnessConfig:
        if self.vkey.split("+", 1)[0] != self.name:
            raise ValueError(f"witness {self.name!r}: its vkey names another key")
        return self


class LogConfig(StrictModel):
    """The evidence log: its name (origin) and signing key, and how often to checkpoint."""

    #: origin = "<origin_base>/log/<collector_id>"; a domain the operator controls
    origin_base: str = "fieldproof.example"
    #: default: <data_dir>/log.key (created on first start, mode 0600)
    key_file: Path | None = None
    checkpoint_interval_s: float = Field(default=300.0, gt=0)
    checkpoint_every_entries: int = Field(default=10_000, ge=1)
    #: witnesses asked to cosign each checkpoint (none: the log is not witnessed)
    witnesses: list[WitnessConfig] = Field(default_factory=list, max_length=32)


class AnchorSettings(StrictModel):
    """Where checkpoints are anchored. ``chain = "none"`` keeps the log unanchored."""

    chain: Literal["none", "thor", "evm"] = "none"
    url: str = ""
    #: file with the anchoring account's private key (mode 0600), or the env var holding it
    key_file: Path | None = None
    key_env: str | None = None
    #: VIP-191 sponsor key file (Thor): the sponsor pays the gas
    sponsor_key_file: Path | None = None
    #: EVM only: the chain id the node must report
    chain_id: int | None = None
    #: EVM: "auto", "finalized" or "confirmations"
    finality: Literal["auto", "finalized", "confirmations"] = "auto"
    confirmations: int = Field(default=12, ge=0)
    #: seconds between anchoring passes
    interval_s: float = Field(default=15.0, gt=0)


class EnrollmentConfig(StrictModel):
    """Enrolling gateways: the collector's MQTT certificate authority, one-time tokens and the
    optional HTTP endpoint gateways post their enrollment request to (docs/enrollment.md)."""

    #: the CA directory (ca.key 0600, ca.pem, crl.pem, issued.json); default <data_dir>/ca
    ca_dir: Path | None = None
    #: pending requests and issued responses; default <data_dir>/enrollment
    state_dir: Path | None = None
    #: also write the CRL here on every revocation (the file the broker's crlfile names)
    crl_copy: Path | None = None
    #: validity of a gateway's MQTT client certificate
    cert_days: int = Field(default=730, ge=1, le=3650)
    #: how long a one-time enrollment token stays usable unless told otherwise
    token_ttl_s: float = Field(default=7 * 86400.0, gt=0)
    #: the HTTP enrollment endpoint; None = off (approve request files by hand)
    listen_host: str = "127.0.0.1"
    listen_port: int | None = Field(default=None, ge=1, le=65535)
    #: serve the endpoint over HTTPS with this certificate/key (e.g. from 'ca server-cert')
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: where gateways should connect, told to them in the enrollment response
    broker_host: str = ""
    broker_port: int = Field(default=8883, ge=1, le=65535)
    #: requests waiting for an operator (they came without a token): at most this many and
    #: bytes, each dropped after pending_ttl_s
    pending_max: int = Field(default=100, ge=1, le=100_000)
    pending_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    pending_ttl_s: float = Field(default=14 * 86400.0, gt=0)
    #: the endpoint serves this many requests at once, with this many connections waiting
    workers: int = Field(default=4, ge=1, le=64)
    queue: int = Field(default=16, ge=1, le=1024)
    #: connections one client address may hold open (behind a reverse proxy every client
    #: has the proxy's address: raise these, or limit at the proxy)
    connections_per_address: int = Field(default=4, ge=1, le=1024)
    #: seconds a connection may take in all (TLS handshake, request, answer)
    request_timeout_s: float = Field(default=15.0, gt=0, le=300)
    #: requests per client address: a burst of rate_burst, refilled at rate_per_minute
    rate_burst: int = Field(default=10, ge=1, le=100_000)
    rate_per_minute: float = Field(default=6.0, gt=0)


class MetricsConfig(StrictModel):
    """Prometheus ``/metrics`` and ``/healthz``. Off unless a port is given; loopback by
    default (put a reverse proxy or the Prometheus agent on the same host)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535)
    #: the anchorer's database, to report anchor state (optional)
    anchor_db: Path | None = None
    #: /healthz says unhealthy when the broker connection has been down this long
    unhealthy_after_s: float = Field(default=60.0, gt=0)


#: a Host header value: a DNS name or [IPv6] literal, optionally with ":port"
_HOST_NAME = (
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?$"
)


class ApiConfig(StrictModel):
    """The inspector page and its API (``fieldproof collector inspector``, collector/api.py).
    Every API call needs an access token for one farm or all of them, made with
    ``fieldproof collector api-token create``."""

    #: address to bind; keep loopback unless a TLS-terminating reverse proxy is in front
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=1, le=65535)
    #: Host header values the API also answers to (the names it is served under, e.g.
    #: "inspector.farm.example" behind a proxy, with ":port" unless the port is the scheme's
    #: default); 127.0.0.1, localhost and [::1] with the bound port always work. Any other Host
    #: is refused with 421, so a web page cannot reach the API through DNS rebinding.
    allowed_hosts: list[Annotated[str, StringConstraints(pattern=_HOST_NAME)]] = Field(
        default_factory=list
    )
    #: access tokens (only their SHA-256, mode 0600); default <data_dir>/api-tokens.json
    tokens_file: Path | None = None
    #: the longest period one export or verification may cover (to - from)
    max_range_s: float = Field(default=366 * 86400.0, gt=0, le=100 * 366 * 86400.0)
    #: exports and verifications running at once; more are answered 429 with Retry-After
    max_concurrent_exports: int = Field(default=2, ge=1, le=64)
    #: the Retry-After of a 429
    retry_after_s: int = Field(default=10, ge=1, le=3600)


class CollectorConfig(StrictModel):
    """``fieldproof collector run`` settings."""

    collector_id: str = Field(default="collector-1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    data_dir: Path = Path("/var/lib/fieldproof-collector")
    mqtt: MqttConfig = MqttConfig()
    influx: InfluxConfig = InfluxConfig()
    #: shared subscription group; collectors in the same group split the load
    share_group: str = Field(default="fieldproof", pattern=r"^[A-Za-z0-9_-]+$")
    batch_max: int = Field(default=500, ge=1, le=10_000)
    batch_wait_ms: int = Field(default=50, ge=0, le=10_000)
    #: MQTT 5 Receive Maximum: unacked messages the broker may push at once
    receive_maximum: int = Field(default=2000, ge=1, le=65535)
    #: larger readings messages are quarantined as ``oversized``; at most 65,535 (see
    #: :data:`MAX_LOGGABLE_MESSAGE_BYTES`)
    max_message_bytes: int = Field(default=MAX_LOGGABLE_MESSAGE_BYTES, ge=256)
    stats_interval_s: float = Field(default=10.0, gt=0)
    #: quarantine keeps message bytes for at most this many rows (counters keep counting)
    quarantine_max_rows: int = Field(default=100_000, ge=0)
    #: ... and at most this many bytes of them (message, topic, detail); past it rows are
    #: kept without the message bytes (counters keep counting)
    quarantine_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    log: LogConfig = LogConfig()
    anchor: AnchorSettings = AnchorSettings()
    #: per-field agronomy settings (dashboards/fields.example.toml shows the format)
    fields_file: Path | None = None
    enrollment: EnrollmentConfig = EnrollmentConfig()
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = ApiConfig()

    @pydantic.field_validator("max_message_bytes")
    @classmethod
    def _loggable(cls, v: int) -> int:
        if v > MAX_LOGGABLE_MESSAGE_BYTES:
            raise ValueError(
                f"at most {MAX_LOGGABLE_MESSAGE_BYTES}: an accepted message is logged as its "
                f"exact bytes, and a log entry longer than {MAX_LOGGABLE_MESSAGE_BYTES} bytes "
                "cannot be published as tiles (a tlog-tiles entry bundle gives each entry a "
                f"16-bit length); set max_message_bytes to {MAX_LOGGABLE_MESSAGE_BYTES} or less"
            )
        return v

    @property
    def log_origin(self) -> str:
        return f"{self.log.origin_base.rstrip('/')}/log/{self.collector_id}"

    @property
    def log_key_file(self) -> Path:
        return self.log.key_file or self.data_dir / "log.key"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "collector.sqlite"


M = TypeVar("M", bound=BaseModel)


def _env_overrides(prefix: str) -> dict[str, Any]:
    """``PREFIX__A__B=v`` → ``{"a": {"b": "v"}}``; pydantic then converts types."""
    out: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.startswith(prefix + "__"):
            continue
        parts = name[len(prefix) + 2 :].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = (
            _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        )
    return merged


def closest_key(key: str, valid: Iterable[str]) -> str | None:
    """The valid key ``key`` was most likely meant to be (a typo, another case), or None."""
    choices = list(valid)
    by_case = {c.lower(): c for c in choices}
    if key.lower() in by_case:
        return by_case[key.lower()]
    found = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _model_at(model: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model of the section ``path`` leads to (through optional and list fields)."""
    current: type[BaseModel] | None = model
    for part in path:
        if current is None:
            return None
        if isinstance(part, int):
            continue  # a list item: the list's element model was taken at its field
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _model_in(info.annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):  # X | None, list[X]
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _section_name(path: Sequence[str | int]) -> str:
    """``("log", "witnesses", 0)`` → ``[[log.witnesses]] #1``; ``()`` → the top level."""
    if not path:
        return "the top level"
    names = ".".join(str(p) for p in path if not isinstance(p, int))
    items = [p for p in path if isinstance(p, int)]
    return f"[[{names}]] #{items[-1] + 1}" if items else f"[{names}]"


def unknown_key_hint(
    model: type[BaseModel] | None, loc: Sequence[str | int], where: str
) -> str:
    """What to say about an unknown key: where it is and the closest valid key (or the valid
    keys when none is close), so a typo is fixed without reading the docs."""
    *section, key = loc
    parent = _model_at(model, section) if model is not None else None
    text = f"{_section_name(section)} {where} has no key {str(key)!r}"
    if parent is None:
        return text
    valid = sorted(parent.model_fields)
    guess = closest_key(str(key), valid)
    if guess is not None:
        return f"{text}; did you mean {guess!r}?"
    return f"{text}; valid keys there: {', '.join(valid)}"


def format_validation_error(
    exc: ValidationError,
    source: str,
    data: dict[str, Any],
    model: type[BaseModel] | None = None,
    env_prefix: str | None = None,
) -> str:
    lines = [f"{source}: invalid configuration"]
    env = _env_overrides(env_prefix) if env_prefix else {}
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "(missing)" if err["type"] == "missing" else repr(value)
        if isinstance(value, dict):
            shown = "{…}"
        elif isinstance(value, list):
            shown = "[…]"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and err["loc"]:
            loc = err["loc"]
            from_env = _lookup(env, loc)
            where = (
                f"(set by environment variable {env_prefix}__"
                + "__".join(str(p).upper() for p in loc) + ")"
                if from_env and env_prefix else f"of {source}"
            )
            msg += ": " + unknown_key_hint(model, loc, where)
        lines.append(f"  {key} = {shown}: {msg}")
    return "\n".join(lines)


def _lookup(tree: dict[str, Any], loc: Sequence[str | int]) -> bool:
    """Whether ``loc`` names a value in ``tree`` (the environment overrides)."""
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def load_model(model: type[M], path: Path | None, env_prefix: str) -> M:
    """Read ``path`` (TOML), apply environment overrides, validate into ``model``."""
    data: dict[str, Any] = {}
    source = str(path) if path else "(defaults)"
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: file not found (give --config the path of a TOML file)"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    data = _merge(data, _env_overrides(env_prefix))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, source, data, model, env_prefix)
        ) from None


def load_collector_config(path: Path | None) -> CollectorConfig:
    return load_model(CollectorConfig, path, "FIELDPROOF_COLLECTOR")
