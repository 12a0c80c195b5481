"""One-way import rules between our packages, checked on the AST of every module.

Every ``.py`` file of every package is found by globbing, so modules added later are covered. Imports
inside functions count too (a lazy import is still a dependency), as do ``importlib.import_module``
calls with a literal name; a call with a computed name (which no reader can check) is itself a break.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ast_imports import COMPUTED, imported_modules

REPO = Path(__file__).resolve().parents[1]
OURS = {"core", "scenes", "pipeline", "cuda", "training", "teacher", "data_gen", "student", "export", "conf",
        "testing", "benchmarks", "tests", "scripts", "report"}
FREE = {"benchmarks", "tests", "scripts", "report"}  # may import anything (report: the whole run's report)
TORCH = {"torch", "lightning", "pytorch_lightning", "torchmetrics", "torchvision"}

# package -> our packages it may import (ARCHITECTURE.md, "Packages and who may import whom")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "conf": set(),
    "scenes": {"core"},
    "pipeline": {"core", "scenes"},  # names no stage: each stage registers its own schema
    "cuda": {"core"},
    "training": {"core", "scenes", "pipeline"},  # the training shell both training stages share
    "teacher": {"core", "scenes", "pipeline", "cuda", "training"},
    "data_gen": {"core", "scenes", "pipeline", "training", "teacher"},
    "student": {"core", "scenes", "pipeline", "cuda", "training"},  # the hash-grid seam serves both stages
    "export": {"core", "scenes", "pipeline", "cuda", "student"},  # cuda: the split viewer model's table
    "testing": OURS - {"tests", "benchmarks", "scripts"},  # shared by tests and benchmarks only
}
# sub-packages with stricter rules: folder -> (our packages allowed, third-party tops forbidden)
STRICT: dict[str, tuple[set[str], set[str]]] = {
    "export/runtime": ({"export"}, TORCH),  # only itself (export.runtime.*): checked below
}
STRICT_SUBPACKAGES = {"export/runtime": ("export.runtime",)}


def _strict_rule(rel: Path) -> str | None:
    """The folder of ``STRICT`` that ``rel`` lies in, if any."""
    return next((folder for folder in STRICT if rel.as_posix().startswith(folder + "/")), None)


def violations(path: Path, root: Path = REPO) -> list[str]:
    """Rule breaks of one file of a package under ``root``, as readable strings."""
    rel = path.relative_to(root)
    package = rel.parts[0]
    package_parts = rel.with_suffix("").parts[:-1] if rel.name != "__init__.py" else rel.parts[:-1]
    strict = _strict_rule(rel)
    allowed, forbidden_third_party = STRICT[strict] if strict else (ALLOWED[package] | {package}, set())
    out = []
    for name in sorted(imported_modules(path, tuple(package_parts))):
        if name == COMPUTED:
            out.append(f"{rel}: imports a module by a computed name (import_module or __import__)")
            continue
        top = name.split(".")[0]
        if top in OURS and top not in allowed:
            out.append(f"{rel}: imports {name} ({package} may import only {sorted(allowed - {package})})")
        if strict and top == "export" and not name.startswith(STRICT_SUBPACKAGES[strict]):
            out.append(f"{rel}: imports {name} ({strict} may import only {list(STRICT_SUBPACKAGES[strict])})")
        if top in forbidden_third_party:
            out.append(f"{rel}: imports {name} (forbidden in {strict})")
    return out


def package_files() -> list[Path]:
    return [p for pkg in ALLOWED for p in sorted((REPO / pkg).rglob("*.py"))]


def test_every_package_is_scanned() -> None:
    files = package_files()
    found = {p.relative_to(REPO).parts[0] for p in files}
    assert {"core", "scenes", "pipeline", "cuda", "teacher", "student", "export", "testing"} <= found
    assert any(p.name == "lightfield.py" for p in files) and any(p.name == "load.py" for p in files)
    # every top-level folder holding an __init__.py is either ruled here or free to import anything
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages <= set(ALLOWED) | FREE, packages - set(ALLOWED)


@pytest.mark.parametrize("path", package_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_import_rules(path: Path) -> None:
    assert violations(path) == []


def test_checker_catches_violations(tmp_path: Path) -> None:
    """The rules above can fail: a fake tree with each kind of break."""
    cases = {
        "core/bad.py": "import teacher.model\n",
        "student/bad.py": "def f():\n    from teacher import hashgrid\n",
        "student/sub/bad.py": "from ...teacher import model\n",
        "data_gen/bad.py": "import importlib\nm = importlib.import_module('student.model')\n",
        "export/runtime/bad.py": "import numpy\nimport torch.nn\n",
        "export/runtime/bad2.py": "from export.onnx import export_student\n",
        "export/runtime/bad3.py": "from core.rays import generate_rays\n",
        "export/ok.py": "from student.model import R2LStudent\n",
        "cuda/bad.py": "from teacher.model import load_teacher\n",
        "pipeline/bad.py": "import importlib\nSTAGE = 'teacher.config'\nimportlib.import_module(STAGE)\n",
        "scenes/bad.py": "from pipeline.config import compose\n",
        "training/bad.py": "m = __import__(name)\n",
    }
    for rel, code in cases.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    for rel in cases:
        found = violations(tmp_path / rel, root=tmp_path)
        if rel == "export/ok.py":
            assert found == []  # export itself may use the student
        else:
            assert found, rel
    ok = tmp_path / "teacher" / "ok.py"
    ok.parent.mkdir(parents=True, exist_ok=True)
    ok.write_text("from . import hashgrid\nfrom core.rays import generate_rays\nimport cuda.hashgrid_ref\n")
    assert violations(ok, root=tmp_path) == []


def test_runtime_imports_without_torch_or_our_training_code() -> None:
    """Importing ``export.runtime`` for real (its package ``__init__`` too) never needs torch."""
    import subprocess
    import sys

    from testing.cli import blocking_imports

    code = blocking_imports(TORCH | (OURS - {"export"})) + "import export.runtime, export.runtime.render\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
