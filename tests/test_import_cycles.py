"""No import cycles between the modules of our packages, read from the AST of every file.

Module-level and function-level imports count alike (a lazy import that closes a cycle still says the two
modules depend on each other); ``from pkg import name`` counts as importing ``pkg.name`` when that is a
module, and importing ``a.b.c`` counts as importing the packages ``a`` and ``a.b`` too (their
``__init__`` runs first).
"""

from __future__ import annotations

from pathlib import Path

from tests.ast_imports import imported_modules

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "scenes", "pipeline", "cuda", "teacher", "data_gen", "student", "export", "training",
            "testing",
            "report")


def module_name(path: Path, root: Path) -> str:
    """Dotted name of a source file (``pkg/__init__.py`` -> ``pkg``)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports, anywhere in its file."""
    files = {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        graph[name] = {m for m in _imported(path, name, is_package, set(files)) if m != name}
    return graph


def _imported(path: Path, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules among ``modules`` that the file of module ``name`` imports.

    The module's own ancestor packages are left out: their ``__init__`` is already running (or done) when
    the module runs, so a sibling import (``export.runtime.meta`` from ``export.runtime.lightfield``) does
    not make the module depend on its parent.
    """
    package = name if is_package else name.rpartition(".")[0]
    parts_of_name = name.split(".")
    ancestors = {".".join(parts_of_name[:i]) for i in range(1, len(parts_of_name))}
    found = set()
    for dotted in imported_modules(path, tuple(package.split(".")), with_names=True):
        parts = dotted.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return (found - ancestors) & modules


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph has a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, c) for c in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A cycle through the smallest module of a strongly connected component (breadth-first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {sorted(component)}")


def test_our_packages_have_no_import_cycles() -> None:
    graph = import_graph()
    assert {"teacher.model", "teacher.checkpoint", "data_gen.render", "export.runtime"} <= set(graph)
    assert "teacher.model" in graph["teacher.checkpoint"]  # the graph sees imports at all
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_checker_finds_cycles(tmp_path: Path) -> None:
    """Cycles closed by a function-level import, a relative import and ``from pkg import module``."""
    files = {
        "core/__init__.py": "",
        "core/a.py": "from core.b import f\n",
        "core/b.py": "def f():\n    import core.a\n",
        "teacher/__init__.py": "",
        "teacher/x.py": "from . import y\n",
        "teacher/y.py": "from .x import g\n",
        "teacher/z.py": "import core.a\n",
    }
    for rel, code in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    cycles = find_cycles(import_graph(tmp_path, ("core", "teacher")))
    assert sorted(cycles) == [["core.a", "core.b", "core.a"], ["teacher.x", "teacher.y", "teacher.x"]]
