"""One error root: every exception class fieldproof defines derives from
``fieldproof.errors.FieldproofError`` (in one of its branches), so a caller can catch ours and
only ours, and ``ValueError`` stays a mixin where parsers' callers rely on it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from fieldproof.errors import FieldproofError

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("fieldproof", "gateway", "collector", "anchor", "inspector", "demo")
#: exceptions used only as internal control flow inside one module, never raised to a caller
INTERNAL = {"_NotExact", "_NeverRaised", "_FeeAboveCap"}


def our_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for room in ROOMS:
        package = importlib.import_module(room)
        names = [room]
        if hasattr(package, "__path__"):
            names += [
                m.name
                for m in pkgutil.walk_packages(package.__path__, f"{room}.")
                if not m.name.endswith("__main__")
            ]
        for name in names:
            module = importlib.import_module(name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                    and obj.__name__ not in INTERNAL
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def test_every_exception_derives_from_the_root() -> None:
    outside = [f"{e.__module__}.{e.__qualname__}" for e in our_exceptions()
               if not issubclass(e, FieldproofError)]  # fmt: skip
    assert outside == []


def test_parse_errors_are_still_value_errors() -> None:
    from fieldproof.formats.bundle import BundleError
    from fieldproof.formats.merkle import ProofError
    from fieldproof.formats.note import NoteError
    from fieldproof.wire import WireError

    for cls in (BundleError, ProofError, NoteError, WireError):
        assert issubclass(cls, ValueError)
