"""Ceilings: raw Ed25519 verify rates (libsodium, OpenSSL) and the product's decode rate."""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _verify_worker(seconds: float, backend: str = "libsodium") -> float:
    """Raw Ed25519 verifications per second on real Sig_structures: ``libsodium`` (PyNaCl,
    what the product uses, fieldproof/ed25519.py) or ``openssl`` (``cryptography``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fieldproof import ed25519, wire

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    raw = wire.public_key_bytes(key)
    msgs = []
    for i in range(200):
        m = wire.encode_message(
            wire.Payload(
                "gw-0011223344556677", i + 1, 1, (wire.Reading("s", "q", "/", 0.2, 1.7e9),)
            ),
            key,
        )
        s = wire.parse_sign1(m)
        msgs.append((s.signature, s.to_be_signed()))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if backend == "openssl":
            for sig, data in msgs:
                pub.verify(sig, data)
        else:
            for sig, data in msgs:
                ed25519.verify(raw, sig, data)
        n += len(msgs)
    return n / (time.perf_counter() - t0)


def _verify_openssl(seconds: float) -> float:
    return _verify_worker(seconds, "openssl")


def _decode_worker(readings: int, seconds: float) -> float:
    from benchmarks.workload import _sign_range, gateway_key
    from fieldproof import wire

    msgs = [m for _, _, m in _sign_range("verify", 1, readings, 60.0, 1.7e9, 0, 300)]
    pub = wire.public_key_bytes(gateway_key("verify", 0))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for m in msgs:
            wire.decode_message(m, pub)
        n += len(msgs)
    return n / (time.perf_counter() - t0)


def bench_verify(runs: int, seconds: float) -> dict[str, Any]:
    """The ceiling: raw Ed25519 verify with the product's backend (libsodium) and with OpenSSL
    for reference, one core and two processes at once; and the product's decode_message."""
    one = [_verify_worker(seconds) for _ in range(runs)]
    one_ossl = [_verify_openssl(seconds) for _ in range(runs)]
    ctx = get_context("spawn")
    two, two_ossl = [], []
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        for _ in range(runs):
            two.append(sum(pool.map(_verify_worker, [seconds, seconds])))
            two_ossl.append(sum(pool.map(_verify_openssl, [seconds, seconds])))
    dec1 = [_decode_worker(1, seconds) for _ in range(runs)]
    dec10 = [_decode_worker(10, seconds) for _ in range(runs)]
    return {
        "backend": "libsodium (PyNaCl)",
        "ed25519_verify_per_s_one_core": statistics.median(one),
        "ed25519_verify_per_s_two_processes": statistics.median(two),
        "openssl_verify_per_s_one_core": statistics.median(one_ossl),
        "openssl_verify_per_s_two_processes": statistics.median(two_ossl),
        "decode_message_per_s_1_reading": statistics.median(dec1),
        "decode_message_per_s_10_readings": statistics.median(dec10),
        "runs": runs,
    }
