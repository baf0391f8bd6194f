"""The shipped Mosquitto configuration (deploy/mosquitto/), made runnable elsewhere.

Tests and the secure demo must run the broker with *exactly* the configuration operators
deploy, or the tests prove nothing about it. :func:`render_broker_config` therefore changes
only what has to differ on another machine — the listener's port and address, the directories
— and refuses a template that has drifted from the directives it knows how to move."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from collector.ca import CertificateAuthority, CertKind
from fieldproof.errors import ConfigError
from fieldproof.services import Mosquitto
from fieldproof.tls import CAError, load_private_key, make_csr, new_tls_key, write_private_key

#: where the shipped files say the broker's configuration and certificates live
DEPLOY_CONF_DIR = "/etc/fieldproof/mosquitto"
DEPLOY_DATA_DIR = "/var/lib/mosquitto"
DEPLOY_PORT = 8883
DEPLOY_COLLECTOR = "collector-1"
#: the deploy/mosquitto directory of a source checkout
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"


class BrokerConfigError(ConfigError):
    """The template is not the one this code knows how to relocate."""


def render_broker_config(
    template: str, *, port: int, conf_dir: Path, data_dir: Path, host: str | None = "127.0.0.1"
) -> str:
    """The shipped mosquitto.conf with its listener on ``host:port`` and its paths moved to
    ``conf_dir`` / ``data_dir``. Everything else is kept byte for byte."""
    listener = f"listener {DEPLOY_PORT}"
    if len(re.findall(r"^listener\b", template, re.M)) != 1 or not re.search(
        rf"^{listener}$", template, re.M
    ):
        raise BrokerConfigError(
            f"the template must have exactly one listener, '{listener}' (no plain-TCP listener)"
        )
    out = re.sub(
        rf"^{listener}$", f"listener {port}" + (f" {host}" if host else ""), template, flags=re.M
    )
    out = out.replace(DEPLOY_CONF_DIR + "/", f"{conf_dir}/")
    out = out.replace(
        f"persistence_location {DEPLOY_DATA_DIR}/", f"persistence_location {data_dir}/"
    )
    return out


def render_acl(template: str, collector_ids: list[str]) -> str:
    """The shipped ACL with its collector block repeated for each collector id."""
    head, sep, block = template.partition(f"user {DEPLOY_COLLECTOR}\n")
    if not sep:
        raise BrokerConfigError(f"the ACL template has no 'user {DEPLOY_COLLECTOR}' block")
    blocks = [
        f"user {DEPLOY_COLLECTOR}\n{block}".replace(DEPLOY_COLLECTOR, c) for c in collector_ids
    ]
    return head + "\n".join(blocks)


class SecureMosquitto(Mosquitto):
    """Mosquitto on loopback running the shipped TLS/ACL configuration.

    ``conf_dir`` must hold ``certs/{ca.pem,server.pem,server.key,crl.pem}``; the ACL is written
    there from the template for ``collector_ids``."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        conf_dir: Path,
        collector_ids: list[str],
        port: int | None = None,
        template_dir: Path = TEMPLATE_DIR,
    ) -> None:
        super().__init__(workdir, port)
        self.conf_dir = Path(conf_dir)
        self.collector_ids = collector_ids
        self.template_dir = Path(template_dir)

    def command(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        conf = render_broker_config(
            (self.template_dir / "mosquitto.conf").read_text(),
            port=self.port,
            conf_dir=self.conf_dir,
            data_dir=data,
        )
        if os.geteuid() == 0:
            # As root Mosquitto drops to the 'mosquitto' user, which cannot read our
            # temporary directory; a loopback test broker may stay root.
            conf += "\nuser root\n"
        (self.conf_dir / "acl.conf").write_text(
            render_acl((self.template_dir / "acl.conf").read_text(), self.collector_ids)
        )
        self.config_path.write_text(conf)
        return [self.binary, "-c", str(self.config_path)]


def provision_broker_certs(
    ca: CertificateAuthority, certs_dir: Path, hosts: list[str], days: int = 825
) -> None:
    """Everything the broker's TLS listener reads, in ``certs_dir``: server.key (0600, made
    here), server.pem for ``hosts``, ca.pem and the current crl.pem."""
    certs_dir = Path(certs_dir)
    key_path = certs_dir / "server.key"
    if key_path.exists():
        raise CAError(f"{key_path} exists; move it away to make a new one")
    cert = ca.issue_server(hosts, key_path, days)
    _write_public(certs_dir / "server.pem", cert.public_bytes(Encoding.PEM))
    _write_public(certs_dir / "ca.pem", ca.cert_pem)
    _write_public(certs_dir / "crl.pem", ca.crl_path.read_bytes())


def issue_local_client(
    ca: CertificateAuthority,
    cn: str,
    kind: CertKind,
    key_path: Path,
    cert_path: Path,
    ca_path: Path,
    days: int = 825,
) -> x509.Certificate:
    """A client certificate for a service on the CA's own host (a collector): the key is made
    here, or reused when ``key_path`` exists."""
    key = load_private_key(key_path) if Path(key_path).exists() else None
    if key is None:
        key = new_tls_key()
        write_private_key(key_path, key)
    cert = ca.issue_client(make_csr(key, cn), cn, kind, days)
    _write_public(cert_path, cert.public_bytes(Encoding.PEM))
    _write_public(ca_path, ca.cert_pem)
    return cert


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)
