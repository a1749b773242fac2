"""The package's modules depend on one another without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import morag_progress

_ROOT = Path(morag_progress.__file__).parent.parent


def _graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports, anywhere in it (a
    type-only or function-level import is a dependency too)."""
    modules: dict[str, Path] = {}
    for package in ("morag_progress", "morag_core"):
        for path in (_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(_ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {other for other in found if other in modules and other != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_no_module_imports_itself_through_others() -> None:
    """No import circle, type-only ones included: a layer below (the store) never reaches
    back to a layer above (keys, tracing, the tracker)."""
    assert _circles(_graph()) == []


def test_the_check_finds_a_circle() -> None:
    """The check itself: a circle of three is found."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
