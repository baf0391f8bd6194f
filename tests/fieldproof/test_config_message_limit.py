"""``max_message_bytes`` cannot be set to a size whose messages could not be logged: an
accepted message is its own log entry, and a tlog-tiles entry bundle holds at most 65,535
bytes. A config above that is refused naming the file, the key, the value and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldproof.config import MAX_LOGGABLE_MESSAGE_BYTES, CollectorConfig, load_collector_config
from fieldproof.errors import ConfigError
from fieldproof.formats.tiles import MAX_ENTRY_BYTES, TileError, encode_entry_bundle
from fieldproof.wire import MAX_MESSAGE_BYTES


def test_the_bound_is_what_an_entry_bundle_can_hold() -> None:
    assert MAX_LOGGABLE_MESSAGE_BYTES == MAX_ENTRY_BYTES == 0xFFFF
    # one limit: the wire codec reads, and a gateway signs, no message the log could not hold
    assert MAX_MESSAGE_BYTES == MAX_LOGGABLE_MESSAGE_BYTES
    encode_entry_bundle([b"\xd2" * MAX_LOGGABLE_MESSAGE_BYTES])
    with pytest.raises(TileError, match=r"65536 bytes.*16 bits"):
        encode_entry_bundle([b"\xd2" * (MAX_LOGGABLE_MESSAGE_BYTES + 1)])


def test_the_default_is_the_bound_and_the_bound_itself_is_allowed(tmp_path: Path) -> None:
    assert CollectorConfig().max_message_bytes == MAX_LOGGABLE_MESSAGE_BYTES
    p = tmp_path / "collector.toml"
    p.write_text(f"max_message_bytes = {MAX_LOGGABLE_MESSAGE_BYTES}\n")
    assert load_collector_config(p).max_message_bytes == MAX_LOGGABLE_MESSAGE_BYTES
    p.write_text("max_message_bytes = 4096\n")
    assert load_collector_config(p).max_message_bytes == 4096


@pytest.mark.parametrize("value", [65_536, 200 * 1024, 1024 * 1024])
def test_a_limit_above_the_bound_is_refused_with_key_value_and_reason(
    tmp_path: Path, value: int
) -> None:
    p = tmp_path / "collector.toml"
    p.write_text(f"max_message_bytes = {value}\n")
    with pytest.raises(ConfigError) as exc:
        load_collector_config(p)
    text = str(exc.value)
    assert str(p) in text
    assert f"max_message_bytes = {value}: at most 65535" in text
    assert "logged as its exact bytes" in text and "16-bit length" in text


def test_an_environment_override_above_the_bound_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIELDPROOF_COLLECTOR__MAX_MESSAGE_BYTES", "70000")
    with pytest.raises(ConfigError, match=r"max_message_bytes = '70000': at most 65535"):
        load_collector_config(None)
