"""No import cycles between the project's modules (``service/``, ``training/``), lazy imports included.

A function-level ``import`` still closes a circle: whichever module is imported first decides whether the other
one is half-initialised when the import runs. The graph is read from the source with :mod:`ast`, so the test
needs none of the heavy dependencies and covers every module, imported by a test or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training")

# Cycles known and being fixed. An entry here must still be a real cycle: the test fails when it is gone, so the
# allowance is removed together with the circle it excused. None today.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if _is_type_checking_block(node):
            skipped.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import service.x.y` where only service.x is ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_lazy_and_relative_cycles(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("def f():\n    from pkg.two import g\n")
    (pkg / "two.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import one\nif TYPE_CHECKING:\n    import pkg\n"
    )
    known = {"pkg", "pkg.one", "pkg.two"}
    assert _imports("pkg.one", pkg / "one.py", known) == {"pkg.two"}
    assert _imports("pkg.two", pkg / "two.py", known) == {"pkg.one"}


def test_service_and_training_have_no_import_cycles():
    graph = import_graph()
    assert {"service.app", "training.train", "training.sagemaker"} <= set(graph)
    found = {frozenset(c) for c in cycles(graph)}
    stale = ALLOWED_CYCLES - found
    assert not stale, f"these allowed cycles are gone: remove them from ALLOWED_CYCLES: {stale}"
    unexpected = sorted(sorted(c) for c in found - ALLOWED_CYCLES)
    assert not unexpected, f"import cycles: {unexpected}"


def test_training_never_is_imported_by_the_service():
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("training")) for m, deps in graph.items()}
    assert not {m: d for m, d in offenders.items() if m.startswith("service") and d}


#: The service's folders from the bottom up: a module imports only from its own layer, the layers below it and the
#: shared modules at the top of ``service`` (settings, errors, labels, metrics, media types, answer schemas).
LAYERS: list[set[str]] = [
    {"imaging", "checks"},
    {"inference"},
    {"protocols"},
    {"http", "dicom_node"},
    {"app", "server"},
]
SHARED = {"service", "config", "errors", "labels", "metrics", "mime", "offline", "schemas"}


def _service_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "service"


def _rank(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up the service's layers (shared modules may import any layer below ``protocols``)."""
    problems = []
    for module, targets in graph.items():
        if not module.startswith("service"):
            continue
        part = _service_part(module)
        for target in targets:
            if not target.startswith("service"):
                problems.append(f"{module} imports {target}: the service never imports training")
                continue
            other = _service_part(target)
            if other in SHARED or other == part:
                continue
            ceiling = _rank("inference") if part in SHARED else _rank(part)
            if _rank(other) > ceiling:
                problems.append(f"{module} imports {target}")
    return problems


def test_every_service_module_is_in_a_layer():
    parts = {_service_part(m) for m in import_graph() if m.startswith("service")}
    assert parts - SHARED <= set().union(*LAYERS), parts - SHARED - set().union(*LAYERS)


def test_the_service_layers_import_one_way():
    assert layering_problems(import_graph()) == []


def test_the_layer_check_finds_an_upward_import():
    graph = {
        "service.imaging.dicom": {"service.inference.classifier"},
        "service.http.routes.predict": {"service.inference.pipeline"},
        "service.config": {"service.http.limits"},
    }
    assert layering_problems(graph) == [
        "service.imaging.dicom imports service.inference.classifier",
        "service.config imports service.http.limits",
    ]
