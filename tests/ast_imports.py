"""The modules a source file imports, read from its AST (the import rules and the import-cycle tests)."""

from __future__ import annotations

import ast
from pathlib import Path

COMPUTED = "<computed>"  # what an import_module / __import__ call with a non-literal name gives


def imported_modules(path: Path, package_parts: tuple[str, ...], with_names: bool = False) -> set[str]:
    """Dotted names of every module a file imports (relative imports resolved against its package).

    With ``with_names``, ``from pkg import x`` also gives ``pkg.x`` (``x`` may be a module: the import
    graph of tests/test_import_cycles.py needs it). An ``import_module`` / ``__import__`` call whose name is
    not a literal string gives :data:`COMPUTED`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source:
                names.add(source)
            if with_names:
                names.update(f"{source}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
                else:
                    names.add(COMPUTED)
    return names
