"""The package's import graph: no cycle, imports inside functions counted, and ``import
taskmill`` stays light.

Every ``import`` of a ``taskmill`` module is an edge, wherever it stands: at the top, inside a
function, under ``if TYPE_CHECKING:``.  A function-level import that only dodges a cycle at
import time still ties the two modules together, so it counts.  ``pyproject.toml``'s
import-linter ``layers`` contract (run by ``.ci/run``) says which way the edges may point;
this test says there is no loop, whatever the layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "taskmill"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package by dotted name -> (file, is a package's ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported taskmill module: line of its first import}, every import counted
    (``from a import b`` is an import of ``a.b`` when that is a module, else of ``a``)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package, up level - 1
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            for target in targets:
                module = known(target)
                if module is not None and module != name:
                    edges.setdefault(module, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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


def _described(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    inside = set(component)
    edges = [
        f"  {a} -> {b} (line {line})"
        for a in component
        for b, line in sorted(graph[a].items())
        if b in inside
    ]
    return " ⇄ ".join(component) + "\n" + "\n".join(edges)


def test_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    assert "taskmill.cli" in graph["taskmill.__main__"]  # `from .cli import main`
    assert "taskmill.bench" in graph["taskmill.cli.bench"]  # `from .. import bench`, in a function
    assert "taskmill.backends.sql" in graph["taskmill.backends.postgres.migrate"]  # `from ..sql`


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (function-level imports counted):\n" + "\n".join(
        _described(c, graph) for c in found
    )


def test_importing_taskmill_loads_no_duckdb_psycopg_or_ipywidgets() -> None:
    heavy = ("duckdb", "psycopg", "ipywidgets")
    code = f"import sys, taskmill; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
