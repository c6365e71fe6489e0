"""The import graph points down: a wrong-way import fails here, naming both modules.

Layers, bottom up (shared/DESIGN.md, "Repository layout"):
core (positions, events, the codec, the catalog, errors, configuration, values, targets)
→ the transports and the package room → the compactor's fold and reference state →
``producers`` and ``restorer`` (never each other) → the application (CLI, commands, demo,
sample, embedded servers, the operations layer). Imports inside functions count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = ("journal", "producers", "restorer")

CORE = {"journal", "journal.positions", "journal.events", "journal.catalog", "journal.codec",
        "journal.errors", "journal.config", "journal.durable", "journal.processes",
        "journal.row_identity", "journal.schema_change", "journal.values", "journal.targets",
        "journal.table_schema"}
COMPACTION = {"journal.compactor", "journal.fold", "journal.sorting", "journal.stream_state",
              "journal.retention", "journal.marks"}
# what each layer may import besides itself
LAYERS = ["core", "transport", "packages", "compaction", "producers", "restorer", "application"]
ALLOWED = {
    "core": {"core"},
    "transport": {"core", "transport"},
    "packages": {"core", "packages"},
    "compaction": {"core", "transport", "packages", "compaction"},
    "producers": {"core", "transport", "packages", "producers"},
    "restorer": {"core", "transport", "packages", "compaction", "restorer"},
    "application": set(LAYERS),
}


def _room(module: str, of: set[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in of - {"journal"}) or (
        "journal" in of and module == "journal")


def layer(module: str) -> str:
    if _room(module, CORE):
        return "core"
    if _room(module, {"journal.transport"}):
        return "transport"
    if _room(module, {"journal.packages"}):
        return "packages"
    if _room(module, COMPACTION):
        return "compaction"
    if module.split(".")[0] in ("producers", "restorer"):
        return module.split(".")[0]
    return "application"


def _modules() -> dict[str, Path]:
    found = {}
    for top in OURS:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours that ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # "from journal import codec" imports the submodule journal.codec
            found.update(f"{target}.{a.name}" for a in node.names
                         if f"{target}.{a.name}" in _modules_cache)
    return {m for m in found if m.split(".")[0] in OURS}


_modules_cache: dict[str, Path] = {}


def wrong_way_imports() -> list[str]:
    _modules_cache.update(_modules())
    problems = []
    for name, path in _modules_cache.items():
        mine = layer(name)
        for target in sorted(_imports(name, path)):
            theirs = layer(target)
            if target == "journal" or theirs in ALLOWED[mine]:
                continue
            problems.append(f"{name} ({mine}) imports {target} ({theirs})")
    return problems


def test_every_import_points_down_the_layers() -> None:
    assert wrong_way_imports() == []


def test_the_layer_rule_catches_a_wrong_way_import() -> None:
    # the rule itself must be able to fail: a core module importing the restorer would
    assert "restorer" not in ALLOWED[layer("journal.positions")]
    assert "producers" not in ALLOWED[layer("restorer.plan")]
    assert "application" not in ALLOWED[layer("producers.capture")]
    assert layer("journal.cli") == "application" and layer("journal.codec.decoder") == "core"


@pytest.mark.parametrize("module", sorted(CORE - {"journal"}))
def test_importing_a_core_module_loads_nothing_above_the_core(module: str) -> None:
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {OURS!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
    assert [m for m in out if layer(m) != "core"] == [], module
