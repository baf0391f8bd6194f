"""The house rules, read from the source: every import of every module (top level, inside
functions, under TYPE_CHECKING) points down the layers, so each room can be installed and
trusted on its own.

    fieldproof (formats, errors, config, shared infrastructure)
      ^            ^                 ^
    gateway      anchor  <------  collector ----> inspector
                   ^ (chain readers only)            |
                   +---------------------------------+
    demo: may use every room; no room uses it (the CLI entry names it as a string)

The inspector is what runs on a stranger's laptop: it reads formats and chain nodes through
the chain readers, and never imports the log store, the log key, an anchorer or the collector.
Chain readers import no anchor writer either (tessera's rule: readers never import writers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("fieldproof", "gateway", "collector", "anchor", "inspector", "demo")
#: anchor modules that read a chain and hold no key or store: all the inspector may use
CHAIN_READERS = frozenset(
    {
        "anchor.chain_reader",
        "anchor.thor",
        "anchor.thor_client",
        "anchor.thor_reader",
        "anchor.evm_reader",
    }
)
ALLOWED: dict[str, frozenset[str]] = {
    "fieldproof": frozenset({"fieldproof"}),
    "gateway": frozenset({"fieldproof", "gateway"}),
    "anchor": frozenset({"fieldproof", "anchor"}),
    "collector": frozenset({"fieldproof", "anchor", "collector", "inspector"}),
    "inspector": frozenset({"fieldproof", "inspector", "anchor"}),  # anchor: readers only
    "demo": frozenset(ROOMS),
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path`` that names one of our rooms."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from anchor import thor` imports the module anchor.thor
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in ROOMS]


def sources(root: Path = ROOT) -> list[Path]:
    return sorted(p for room in ROOMS for p in (root / room).rglob("*.py"))


def is_module(name: str, root: Path = ROOT) -> bool:
    return (root / (name.replace(".", "/") + ".py")).exists() or (
        root / name.replace(".", "/") / "__init__.py"
    ).exists()


def target(name: str, root: Path = ROOT) -> str:
    """The module an import names (``from pkg import module`` or ``from module import name``)."""
    return name if is_module(name, root) else name.rsplit(".", 1)[0]


def violations(root: Path = ROOT) -> list[str]:
    """Every import under ``root`` (a checkout, or a tree a test builds) that breaks the rule."""
    found = []
    for path in sources(root):
        mod = module_name(path, root)
        room = mod.split(".")[0]
        for line, imported in imports_of(path):
            dest = target(imported, root)
            where = f"{path.relative_to(root)}:{line} imports {dest}"
            if dest.split(".")[0] not in ALLOWED[room]:
                found.append(f"{where}: {room} may import only {sorted(ALLOWED[room])}")
            elif room == "inspector" and dest.startswith("anchor") and dest not in CHAIN_READERS:
                found.append(f"{where}: the inspector may use only the chain readers")
            elif mod in CHAIN_READERS and dest.startswith("anchor") and dest not in CHAIN_READERS:
                found.append(f"{where}: a chain reader may not import an anchor writer")
    return found


def test_every_import_points_down_the_layers() -> None:
    assert violations() == []


def _write_tree(root: Path, files: dict[str, str]) -> None:
    """A stand-in checkout under ``root``: every room a package, plus ``files`` (path: text)."""
    for room in ROOMS:
        (root / room).mkdir(parents=True, exist_ok=True)
        (root / room / "__init__.py").touch()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    """The checker itself, on a tree built in a temp dir (never the checkout, which ruff, mypy
    and other pytest runs read meanwhile): each kind of forbidden import is reported, at its
    line, and the allowed imports next to them are not."""
    _write_tree(tmp_path, {
        "collector/store.py": "class CollectorStore: ...\n",
        "anchor/anchoring.py": "class Anchorer: ...\n",
        "anchor/thor_reader.py": "from anchor import anchoring\n",
        "gateway/probe.py": "from fieldproof import wire\n"
                            "def f() -> None:\n    from collector.store import CollectorStore\n",
        "inspector/probe.py": "import anchor.thor_reader\nfrom anchor.anchoring import Anchorer\n",
        "collector/uses.py": "from anchor.anchoring import Anchorer\nimport inspector\n",
    })  # fmt: skip
    found = violations(tmp_path)
    expected = [
        "anchor/thor_reader.py:1 imports anchor.anchoring: a chain reader may not import",
        "gateway/probe.py:3 imports collector.store: gateway may import only",
        "inspector/probe.py:2 imports anchor.anchoring: the inspector may use only",
    ]
    assert len(found) == len(expected), found
    for got, want in zip(sorted(found), expected, strict=True):
        assert got.startswith(want), found


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_is_a_package(room: str) -> None:
    assert (ROOT / room / "__init__.py").exists()


def test_test_modules_never_import_each_other() -> None:
    """Shared fixtures, doubles and simulators live in tests/support; a test module importing
    another test module would run (and couple to) that module's tests."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert found == []


def test_every_benchmark_module_imports_and_the_harness_starts() -> None:
    """Benchmarks are run by hand (docs/benchmarks.md), not by the suite: a refactor must not
    leave them broken until someone needs a figure."""
    import subprocess
    import sys

    modules = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
    code = "import importlib\n" + "".join(
        f"importlib.import_module('benchmarks.{m}')\n" for m in modules
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    run = subprocess.run([sys.executable, "benchmarks/run.py", "--help"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0 and "--quick" in run.stdout, run.stderr[-2000:]
