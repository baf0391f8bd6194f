"""A gateway never signs a message the collector must refuse. A message is logged as its exact
bytes and a tlog-tiles entry bundle gives an entry a 16-bit length, so a collector accepts at
most 65,535 bytes (and the wire format at most 1,000 readings); a longer message is quarantined
as ``oversized`` without a receipt, and the gateway used to resend it, with a doubling wait,
forever. Now the rounds gathered for one message are spread over as many messages (sequence
numbers) as needed, and one sensor's readings of one round that alone cannot fit are refused,
counted in that sensor's errors and said once.

The real agent (its sampler, the real simulated sensor driver, its spool, its key), its
messages read back from the spool and each verified with the real wire decoder."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof.formats.tiles import MAX_ENTRY_BYTES
from fieldproof.wire import (
    MAX_MESSAGE_BYTES,
    MAX_READINGS_PER_MESSAGE,
    MAX_SEQ,
    Payload,
    Reading,
    decode_message,
    encode_message,
    public_key_bytes,
)
from gateway.agent import TOO_LARGE, GatewayAgent
from gateway.config import GatewayConfig
from gateway.sensors.base import SensorConfig, SensorDriver, build_sensor
from gateway.spool import Spool

T0 = 1_750_000_000.0
STEP = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _agent(
    tmp_path: Path, sensors: list[dict[str, Any]], rounds: int
) -> tuple[GatewayAgent, Clock]:
    config = GatewayConfig.model_validate(
        {
            "key_file": str(tmp_path / "gateway.key"),
            "data_dir": str(tmp_path),
            "interval_s": STEP,
            "rounds_per_message": rounds,
            "sensors": sensors,
        }
    )
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(tmp_path.name.encode()).digest())
    clock = Clock()
    return GatewayAgent(config, key=key, clock=clock), clock


def _sample(agent: GatewayAgent, clock: Clock, rounds: int) -> None:
    for i in range(rounds):
        clock.now = T0 + i * STEP
        agent.sample_once()


def _spooled(
    agent: GatewayAgent, spool: Spool | None = None
) -> list[tuple[int, bytes, list[Reading]]]:
    """Every message in the agent's spool (or in ``spool``, the same file opened again),
    verified and decoded as a collector does."""
    pk = public_key_bytes(agent.key)
    out = []
    for msg in (spool or agent.spool).pending(0, 100_000):
        payload = decode_message(msg.message, pk)
        assert payload.gateway == agent.gateway_id and payload.seq == msg.seq
        assert payload.boot == agent.boot
        assert msg.readings == len(payload.readings)
        out.append((msg.seq, msg.message, list(payload.readings)))
    return out


Key = tuple[str, str, float, float | None, str]


def _key(r: Reading) -> Key:
    return (r.sensor, r.quantity, r.time, r.value, r.missing_reason)


def _expected(agent: GatewayAgent, rounds: int) -> Counter[Key]:
    """What the configured sensors read at those times (the simulated driver is a pure
    function of its seed and the time), read from fresh drivers of the same config."""
    drivers = [build_sensor(s) for s in agent.config.sensors]
    return Counter(_key(r) for i in range(rounds) for d in drivers for r in d.read(T0 + i * STEP))


def test_the_limits_are_one() -> None:
    assert MAX_MESSAGE_BYTES == MAX_ENTRY_BYTES == 65_535


def test_rounds_too_long_for_one_message_are_spread_over_several(tmp_path: Path) -> None:
    """Long sensor names and failed readings (their reasons travel as text): 100 rounds of 8
    sensors come to about 580 KB, nine times what one message may carry."""
    rounds = 100
    sensors = [
        {"kind": "simulated", "name": f"probe-{i}-" + "x" * 90, "seed": i, "fault_rate": 0.5}
        for i in range(8)
    ]
    agent, clock = _agent(tmp_path, sensors, rounds)
    try:
        _sample(agent, clock, rounds)
        spooled = _spooled(agent)
        sizes = [len(m) for _, m, _ in spooled]
        assert len(spooled) >= 9 and sum(sizes) > 8 * MAX_MESSAGE_BYTES, sizes
        assert max(sizes) <= MAX_MESSAGE_BYTES
        # cut on bytes, not on the readings bound: every message but the last is near full
        assert all(len(r) < MAX_READINGS_PER_MESSAGE for _, _, r in spooled)
        assert min(sizes[:-1]) > MAX_MESSAGE_BYTES - 2_000, sizes
        assert [s for s, _, _ in spooled] == list(range(1, len(spooled) + 1))
        got = Counter(_key(r) for _, _, readings in spooled for r in readings)
        assert got == _expected(agent, rounds)
        assert sum(got.values()) == rounds * 8 * 5
        assert agent.oversized_readings == 0
        assert not any(TOO_LARGE in s.errors for s in agent.sensors)
    finally:
        agent.shutdown(drain_timeout=0)


def test_rounds_with_more_readings_than_a_message_may_carry_are_spread(tmp_path: Path) -> None:
    """Short readings, but 100 rounds of 3 sensors are 1,500 readings: over the wire format's
    1,000 per message while far under its bytes."""
    rounds = 100
    sensors = [{"kind": "simulated", "name": f"s{i}", "seed": i} for i in range(3)]
    agent, clock = _agent(tmp_path, sensors, rounds)
    try:
        _sample(agent, clock, rounds)
        spooled = _spooled(agent)
        assert len(spooled) == 2
        assert all(len(r) <= MAX_READINGS_PER_MESSAGE for _, _, r in spooled)
        # the cut was on the count: by their bytes, both would have fitted one message
        assert sum(len(m) for _, m, _ in spooled) < MAX_MESSAGE_BYTES
        got = Counter(_key(r) for _, _, readings in spooled for r in readings)
        assert got == _expected(agent, rounds) and sum(got.values()) == 1_500
    finally:
        agent.shutdown(drain_timeout=0)


def test_rounds_that_fit_stay_one_message(tmp_path: Path) -> None:
    rounds = 10
    sensors = [{"kind": "simulated", "name": f"s{i}", "seed": i} for i in range(3)]
    agent, clock = _agent(tmp_path, sensors, rounds)
    try:
        _sample(agent, clock, rounds)
        spooled = _spooled(agent)
        assert len(spooled) == 1 and len(spooled[0][2]) == 150
    finally:
        agent.shutdown(drain_timeout=0)


def test_a_partial_batch_at_shutdown_is_spread_too(tmp_path: Path) -> None:
    """Rounds gathered for a message that is not full yet are spooled when the agent stops:
    they take the same cut."""
    sensors = [
        {"kind": "simulated", "name": f"probe-{i}-" + "x" * 90, "seed": i, "fault_rate": 1.0}
        for i in range(8)
    ]
    agent, clock = _agent(tmp_path, sensors, 100)
    _sample(agent, clock, 60)
    assert agent.spool.depth == 0
    agent.shutdown(drain_timeout=0)
    spool = Spool(agent.config.spool_path)  # the same file, read after the stop
    try:
        spooled = _spooled(agent, spool)
        assert len(spooled) >= 5
        assert max(len(m) for _, m, _ in spooled) <= MAX_MESSAGE_BYTES
        got = Counter(_key(r) for _, _, readings in spooled for r in readings)
        assert got == _expected(agent, 60)
    finally:
        spool.close()


class AbsurdSensor(SensorDriver):
    """A test double: a driver that returns far more in one round than any message may carry.
    No real driver can be made to (their frames and registers are bounded); this is what a
    buggy or third-party driver could do, and the agent must not sign it."""

    kind = "absurd"
    Config = SensorConfig

    def read(self, now: float) -> list[Reading]:
        return [Reading(self.name, f"q{i:03d}", "Cel", None, now, "r" * 150) for i in range(600)]


def test_one_sensor_round_that_alone_cannot_fit_is_refused_counted_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = 3
    sensors = [{"kind": "simulated", "name": f"s{i}", "seed": i} for i in range(2)]
    agent, clock = _agent(tmp_path, sensors, rounds)
    absurd = AbsurdSensor(SensorConfig(kind="absurd", name="runaway"))
    agent.sensors.append(absurd)
    try:
        with caplog.at_level(logging.ERROR, logger="fieldproof.gateway"):
            _sample(agent, clock, rounds * 2)  # two messages' worth
        spooled = _spooled(agent)
        assert len(spooled) == 2
        assert max(len(m) for _, m, _ in spooled) <= MAX_MESSAGE_BYTES
        got = Counter(_key(r) for _, _, readings in spooled for r in readings)
        assert got == _expected(agent, rounds * 2)  # every reading of the other sensors
        assert not any(r.sensor == "runaway" for _, _, readings in spooled for r in readings)
        assert agent.oversized_readings == 600 * rounds * 2
        assert absurd.errors[TOO_LARGE] == rounds * 2 and absurd.last_error == TOO_LARGE
        said = [r.getMessage() for r in caplog.records if "runaway" in r.getMessage()]
        assert len(said) == 1, said
        assert "65535 bytes" in said[0] and "reading-too-large" in said[0]
        assert "runaway: 1800" in said[0]
        # the status message carries the count, as for any sensor fault
        status = agent._status(online=True).decode()
        assert '"runaway"' in status and '"reading-too-large"' in status
    finally:
        agent.shutdown(drain_timeout=0)


def _readings_signing_to(agent: GatewayAgent, size: int) -> list[Reading]:
    """Failed readings whose message, signed by the agent's key at the largest seq and boot
    (what the agent sizes against), is exactly ``size`` bytes: reasons lengthened until the
    bytes add up (between 24 and 200 characters a text has a 2-byte head)."""

    def signed(lengths: list[int]) -> bytes:
        payload = Payload(agent.gateway_id, MAX_SEQ, MAX_SEQ, tuple(readings(lengths)))
        return encode_message(payload, agent.key)

    def readings(lengths: list[int]) -> list[Reading]:
        return [
            Reading(f"s{i:04d}", "soil_moisture", "/", None, T0, "r" * (n - 8))
            for i, n in enumerate(lengths)
        ]

    count = size // 240
    while len(signed([200] * count)) < size:
        count += 1
    lengths = [24] * count
    for _ in range(5):
        missing = size - len(signed(lengths))
        if missing == 0:
            return readings(lengths)
        for i, n in enumerate(lengths):
            step = max(24 - n, min(200 - n, missing))
            lengths[i] += step
            missing -= step
    raise AssertionError(f"no readings sign to exactly {size} bytes")


def test_the_size_check_is_exact_at_the_limit(tmp_path: Path) -> None:
    """The agent sizes a message from its payload and a wrapper measured once; at the limit
    it must agree with the real signer to the byte, either side."""
    agent, _ = _agent(tmp_path, [], 1)
    try:
        for size, fits in ((MAX_MESSAGE_BYTES, True), (MAX_MESSAGE_BYTES + 1, False)):
            assert agent._fits(_readings_signing_to(agent, size)) is fits, size
        small = [Reading("s", "soil_moisture", "/", 0.25, T0)]
        assert agent._fits(small)
    finally:
        agent.shutdown(drain_timeout=0)


def test_the_size_bound_is_never_below_the_real_encoding() -> None:
    """``size_bound`` lets the agent skip the exact encode for messages far below the limit; it
    must never be below what the encoder writes, at the largest seq and boot, whatever the
    readings: long names, units and fault texts (non-ASCII too), floats that need 8 bytes,
    values missing, times spread or equal."""
    import random

    from gateway.agent import size_bound

    rnd = random.Random(7)
    names = "abcdefghijklmnopqrstuvwxyz0123456789_-"
    for _ in range(300):
        n = rnd.choice((1, 2, 5, 30, 200))
        readings = []
        for _ in range(n):
            missing = rnd.random() < 0.3
            readings.append(Reading(
                "".join(rnd.choices(names, k=rnd.randint(1, 60))),
                "".join(rnd.choices(names, k=rnd.randint(1, 60))),
                rnd.choice(("", "/", "Cel", "%RH", "S/m", "kPa")),
                None if missing else rnd.choice((0.1, 1e300, -2.5, 0.0, rnd.random())),
                T0 + rnd.choice((0.0, rnd.random() * 1e6)),
                rnd.choice(("", "timeout", "crc-é€𝄞" * rnd.randint(1, 20))) if missing else "",
            ))
        gw = "gw-" + "".join(rnd.choices("0123456789abcdef", k=16))
        real = len(Payload(gw, MAX_SEQ, MAX_SEQ, tuple(readings)).to_cbor())
        assert size_bound(gw, readings) >= real
