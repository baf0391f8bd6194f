"""What every fuzz target shares: the command line, the seed corpus, a CBOR-aware mutator.

Imports nothing from fieldproof, collector or anchor: the targets import those inside
``atheris.instrument_imports()``, and a module imported earlier would not be instrumented.

Seeds are made by the target at start (never committed) and written to
``$FIELDPROOF_FUZZ_SEEDS`` when set, else to a per-process directory under the system temp
directory (stale ones, of processes that are gone, are removed at the next start: libFuzzer
leaves with ``exit()``, so nothing of Python's runs at the end to clean up)."""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import atheris
import cbor2

ROOT = Path(__file__).resolve().parents[2]
#: the packages whose code is instrumented for coverage
PRODUCT_PACKAGES = ["fieldproof", "collector", "anchor", "inspector"]
#: a memory blow-up is a crash (libFuzzer's RSS watchdog), a slow input a timeout
DEFAULT_FLAGS = ("-rss_limit_mb=2048", "-timeout=10")

TestOneInput = Callable[[bytes], None]
Mutator = Callable[[bytes, int, int], bytes]


# ------------------------------------------------------------------------------ running


def _seed_dir(target: str) -> Path:
    given = os.environ.get("FIELDPROOF_FUZZ_SEEDS")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(tempfile.gettempdir()) / "fieldproof-fuzz"
    base.mkdir(exist_ok=True)
    for old in base.glob("*-seeds-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"{target}-seeds-{os.getpid()}"
    path.mkdir(exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(
    target: str,
    test_one_input: TestOneInput,
    seeds: Callable[[], Iterable[bytes]],
    mutator: Mutator | None = None,
) -> None:
    """Run libFuzzer on ``test_one_input`` with the command line's flags and corpus dirs.

    The generated seeds are an extra, read-only corpus dir after the caller's (libFuzzer writes
    new inputs to the first dir given). Given crash files instead of dirs, it only re-runs
    them, as libFuzzer does; then no seeds are made."""
    args = sys.argv[1:]
    flags = [a for a in args if a.startswith("-")]
    paths = [a for a in args if not a.startswith("-")]
    if not (paths and all(Path(p).is_file() for p in paths)):
        for p in paths:
            Path(p).mkdir(parents=True, exist_ok=True)
        seed_dir = _seed_dir(target)
        for blob in seeds():
            name = seed_dir / hashlib.sha1(blob).hexdigest()  # a file name, not security
            tmp = name.with_suffix(".tmp")
            tmp.write_bytes(blob)
            tmp.replace(name)
        paths.append(str(seed_dir))
    for default in DEFAULT_FLAGS:
        if not any(f.startswith(default.split("=")[0] + "=") for f in flags):
            flags.append(default)
    atheris.Setup([sys.argv[0], *flags, *paths], test_one_input, custom_mutator=mutator)
    atheris.Fuzz()


# ------------------------------------------------------------------------------ outcomes


def strict(value: Any) -> Any:
    """``value`` with every float replaced by its bit pattern, so a comparison tells 0.0 from
    -0.0, NaN equals NaN, and 1 (int) from 1.0 (float): "the same result" means the same."""
    if isinstance(value, float):
        return ("float", value.hex() if math.isfinite(value) else repr(value),
                math.copysign(1.0, value))
    if isinstance(value, bool | int):
        return (type(value).__name__, value)
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(strict(v) for v in value))
    return value


# ------------------------------------------------------------------------------ mutating

_INTS = [0, 1, -1, 2, 23, 24, -24, -25, 255, 256, 999, 1000, 1001, 65535, 65536, 2**31,
         2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**64), 2**64]
_FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 1.5, 0.1, 65504.0, 65505.0, 65520.0, 5.960464477539063e-08,
           2.980232238769531e-08, 1e-8, 3.4028234663852886e38, 3.4028235677973366e38, 1e300,
           1.7e9, 1700000000.25, 1_750_000_000.0, 9e9, 9000000000.000002, 1e13, 1.0000001e13,
           -1e-300, 5e-324, math.inf, -math.inf, math.nan]
_OTHER: list[Any] = [None, True, False, b"", b"\x00" * 32, b"\xff" * 64, "", "a", [], {}, "\x00",
                     "\u00e9", "\U0001f600", "x" * 24, "x" * 256]


class CborMutator:
    """libFuzzer's byte mutations half the time; the other half, decode the input as CBOR,
    change its structure (a value swapped for an edge case or for another part of the input,
    an item dropped, doubled, moved, a key renamed or added) and encode it again with
    ``encode`` — usually the strict deterministic encoder, so the result passes the parsers'
    encoding checks and reaches the semantic ones behind them, which flipped bytes rarely do.

    ``prefix`` leading bytes (a target's mode selector) are kept, and changed now and then."""

    def __init__(self, encode: Callable[[Any], bytes], *, strings: Iterable[str] = (),
                 keys: Iterable[Any] = (), prefix: int = 0) -> None:
        self.encode = encode
        self.strings = list(strings)
        self.keys = list(keys)
        self.prefix = prefix

    def __call__(self, data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        head, body = data[: self.prefix], data[self.prefix :]
        if self.prefix and (len(head) < self.prefix or rng.random() < 0.05):
            head = bytes(rng.randrange(256) for _ in range(self.prefix))
        if rng.random() < 0.5:
            out = self._structural(body, max_size - self.prefix, rng)
            if out is not None:
                return head + out
        return head + bytes(atheris.Mutate(body, max(0, max_size - self.prefix)))

    # ---------------------------------------------------------------- structure

    def _structural(self, body: bytes, max_size: int, rng: random.Random) -> bytes | None:
        # a mutator must never raise (libFuzzer would stop): any failure means "not this way"
        try:
            obj = _thaw(cbor2.loads(body))
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                obj = self._mutate_once(obj, rng)
            out = self.encode(obj) if rng.random() < 0.9 else bytes(cbor2.dumps(obj))
        except Exception:  # not CBOR (yet), or e.g. a key the strict encoder refuses
            return None
        return out if len(out) <= max_size else None

    def _value(self, rng: random.Random, root: Any) -> Any:
        pick = rng.random()
        if pick < 0.3:
            return rng.choice(_INTS)
        if pick < 0.55:
            return rng.choice(_FLOATS)
        if pick < 0.75 and self.strings:
            return rng.choice(self.strings)
        if pick < 0.9:
            paths = _paths(root)
            return _thaw(_get(root, rng.choice(paths)))
        return _thaw(rng.choice(_OTHER))

    def _tweak(self, node: Any, rng: random.Random, root: Any) -> Any:
        if isinstance(node, bool) or node is None:
            return self._value(rng, root)
        if isinstance(node, int):
            return rng.choice((node + 1, node - 1, -node, node * 2, node + rng.randint(-300, 300),
                               float(node)))
        if isinstance(node, float):
            if not math.isfinite(node):
                return rng.choice(_FLOATS)
            return rng.choice((math.nextafter(node, math.inf), math.nextafter(node, -math.inf),
                               node * 2, node / 3, -node, float(int(node)), int(node)))
        if isinstance(node, str):
            if node and rng.random() < 0.4:
                i = rng.randrange(len(node))
                return node[:i] + node[i + 1 :]
            extra = rng.choice(("/", ":", "_", "-", ".", "%", " ", "\n", ",", "=", "\\", "\"",
                                "A", "0", "\u00e9", "\x7f", "x" * 20))
            i = rng.randrange(len(node) + 1)
            return node[:i] + extra + node[i:]
        if isinstance(node, bytes):
            if node and rng.random() < 0.5:
                i = rng.randrange(len(node))
                return node[:i] + bytes([node[i] ^ (1 << rng.randrange(8))]) + node[i + 1 :]
            return node[: rng.randrange(len(node) + 1)] if node else b"\x00"
        if isinstance(node, list):
            op = rng.randrange(5)
            if op == 0 and node:
                del node[rng.randrange(len(node))]
            elif op == 1 and node:
                node.insert(rng.randrange(len(node) + 1), _thaw(rng.choice(node)))
            elif op == 2 and len(node) > 1:
                i, j = rng.randrange(len(node)), rng.randrange(len(node))
                node[i], node[j] = node[j], node[i]
            elif op == 3:
                node.insert(rng.randrange(len(node) + 1), self._value(rng, root))
            elif node:
                node *= rng.choice((2, 3)) if len(node) < 64 else 1
            return node
        if isinstance(node, dict):
            op = rng.randrange(3)
            if op == 0 and node:
                del node[rng.choice(list(node))]
            elif op == 1 and node and self.keys:
                old = rng.choice(list(node))
                node[rng.choice(self.keys)] = node.pop(old)
            else:
                key = rng.choice(self.keys) if self.keys and rng.random() < 0.8 else \
                    self._value(rng, root)
                if isinstance(key, list | dict):
                    key = str(key)
                node[key] = self._value(rng, root)
            return node
        return self._value(rng, root)

    def _mutate_once(self, root: Any, rng: random.Random) -> Any:
        path = rng.choice(_paths(root))
        node = _get(root, path)
        new = self._value(rng, root) if rng.random() < 0.35 else self._tweak(node, rng, root)
        return _set(root, path, new)


def _thaw(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {_thaw_key(k): _thaw(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_thaw(x) for x in obj]
    if isinstance(obj, cbor2.CBORTag):
        return cbor2.CBORTag(obj.tag, _thaw(obj.value))
    return obj


def _thaw_key(key: Any) -> Any:
    return key if isinstance(key, str | int | float | bytes | bool | None) else str(key)


Path_ = tuple[Any, ...]


def _paths(root: Any, limit: int = 5000) -> list[Path_]:
    """Every node's path from the root (list index or dict key per step), root first."""
    out: list[Path_] = [()]
    stack: list[tuple[Path_, Any]] = [((), root)]
    while stack and len(out) < limit:
        path, node = stack.pop()
        children: Iterable[tuple[Any, Any]] = ()
        if isinstance(node, list):
            children = enumerate(node)
        elif isinstance(node, dict):
            children = node.items()
        for step, child in children:
            out.append((*path, step))
            stack.append(((*path, step), child))
    return out


def _get(root: Any, path: Path_) -> Any:
    for step in path:
        root = root[step]
    return root


def _set(root: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root
