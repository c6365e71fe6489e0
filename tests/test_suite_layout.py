"""The suite's own layout: shared code lives in tests/support/ or conftest.py fixtures, so
no test module imports another (or conftest.py, which pytest loads itself)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # `from tests import test_x` names the module in the alias
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_test_module(name: str) -> bool:
    parts = name.split(".")
    return (len(parts) == 2 and parts[0] == "tests"
            and (parts[1].startswith("test_") or parts[1] == "conftest"))


def test_no_test_module_imports_another_test_module_or_conftest() -> None:
    offenders = {f"{path.relative_to(TESTS.parent)} imports {name}"
                 for path in sorted(TESTS.rglob("*.py")) if path.name != "conftest.py"
                 for name in _imported_modules(path) if _is_test_module(name)}
    assert not offenders, "move what is shared into tests/support/:\n" + "\n".join(
        sorted(offenders))


def test_the_rule_sees_every_form_of_import(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("import tests.test_a\nfrom tests.test_b import c\n"
                      "from tests import test_d\nfrom tests.conftest import e\n"
                      "from tests.support.streams import f\n")
    assert sorted(n for n in _imported_modules(module) if _is_test_module(n)) == [
        "tests.conftest", "tests.test_a", "tests.test_b", "tests.test_d"]
