"""The tiny model is fitted once per test session: its session fixtures are bound in ``tests/conftest.py`` and in
no other module. pytest makes a separate fixture of each binding (a ``def``, an import into another conftest,
an alias in a test module), and each one fits and exports the model again."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SESSION_FIXTURES = {"model_root", "legacy_root", "mismatched_root", "tf_classifier", "ov_classifier", "expected"}


def _module_bindings(path: Path) -> set[str]:
    """Names bound at the top level of a module: functions, classes, assignments and imports."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def test_the_tiny_model_fixtures_are_defined_once() -> None:
    assert _module_bindings(TESTS / "conftest.py") >= SESSION_FIXTURES
    elsewhere = {
        str(path.relative_to(TESTS)): sorted(_module_bindings(path) & SESSION_FIXTURES)
        for path in sorted(TESTS.rglob("*.py"))
        if path != TESTS / "conftest.py"
    }
    assert {module: names for module, names in elsewhere.items() if names} == {}
