"""Who this gateway is and where its TLS files are: what the running agent and the doctor need
from enrollment, without enrollment's CA and collector code (a few MiB on a small Pi).

``gateway.enroll`` re-exports these names, so older imports keep working."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof.wire import gateway_id_for, public_key_bytes
from gateway.config import GatewayConfig


@dataclass(frozen=True)
class TlsPaths:
    ca_file: Path
    cert_file: Path
    key_file: Path
    #: False when the config has no [mqtt.tls] and these are the defaults under data_dir/tls
    configured: bool


def tls_paths(cfg: GatewayConfig) -> TlsPaths:
    """Where the MQTT TLS files live: [mqtt.tls] in the config, else <data_dir>/tls/."""
    d = cfg.data_dir / "tls"
    tls = cfg.mqtt.tls
    if tls is None:
        return TlsPaths(d / "ca.pem", d / "client.pem", d / "client.key", False)
    return TlsPaths(
        tls.ca_file, tls.cert_file or d / "client.pem", tls.key_file or d / "client.key", True
    )


def identity_file(cfg: GatewayConfig) -> Path:
    return cfg.key_file.with_name(cfg.key_file.name + ".id")


def gateway_identity(cfg: GatewayConfig, key: Ed25519PrivateKey) -> str:
    """This gateway's id. It is derived from the first key; after a key rotation the id stays
    and ``<key_file>.id`` records it (with the key it belongs to, so a fresh ``gateway init``
    after a revocation is not mistaken for the old gateway)."""
    pk = public_key_bytes(key)
    try:
        data = json.loads(identity_file(cfg).read_text())
    except (OSError, ValueError):
        return gateway_id_for(pk)
    if isinstance(data, dict) and data.get("public_key") == pk.hex():
        gw = data.get("gateway")
        if isinstance(gw, str) and gw.startswith("gw-"):
            return gw
    return gateway_id_for(pk)
