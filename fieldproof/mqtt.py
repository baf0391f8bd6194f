"""Shared MQTT plumbing: topic names and a configured paho-mqtt 2.x MQTT 5 client."""

from __future__ import annotations

import os
import ssl
from typing import Any, TypeVar, overload

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fieldproof.config import MqttConfig


def readings_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/readings"


def status_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/status"


def receipts_topic(prefix: str, gateway: str) -> str:
    """Where collectors confirm what they hold durably; only collectors may publish here."""
    return f"{prefix}/{gateway}/receipts"


def collector_presence_topic(prefix: str, collector: str) -> str:
    return f"{prefix}/_collector/{collector}/status"


def gateway_from_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``prefix/<gateway>/<kind>`` → (gateway, kind), None when the topic is not ours."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    return parts[0], parts[1]


ClientT = TypeVar("ClientT", bound=paho.Client)


@overload
def make_client(cfg: MqttConfig, client_id: str) -> paho.Client: ...


@overload
def make_client(
    cfg: MqttConfig, client_id: str, client_class: type[ClientT], **kwargs: Any
) -> ClientT: ...


def make_client(
    cfg: MqttConfig, client_id: str, client_class: type[Any] = paho.Client, **kwargs: Any
) -> Any:
    """An MQTT 5 client with TLS and credentials from config (password from the environment).
    ``client_class`` is paho's ``Client`` or a subclass taking ``kwargs`` as well."""
    client = client_class(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, **kwargs
    )
    if cfg.username:
        password = os.environ.get(cfg.password_env) if cfg.password_env else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        client.tls_set(
            ca_certs=str(cfg.tls.ca_file),
            certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
            keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(cfg.tls.insecure_skip_hostname_check)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def wait_for_retained(
    host: str, port: int, topic: str, expect: bytes, timeout: float = 30.0
) -> bool:
    """Wait until the retained message on ``topic`` contains ``expect`` (e.g. a collector's
    presence saying it is subscribed). Returns False on timeout."""
    import threading

    seen = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        c.subscribe(topic, qos=1)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        if expect in msg.payload:
            seen.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        return seen.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
