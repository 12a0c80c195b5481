"""Running our commands as a user does, in a subprocess, and checking how they answer.

:func:`run_cli` runs ``python -m <module> <overrides>`` with this repository importable;
:func:`one_line_error` checks the answer to bad input that every stage gives (exit 1, one ``error:``
line on stderr, no traceback) and returns that line, :func:`main_error` the same of a ``main`` called
in this process; :func:`run_js` runs an ES module of the viewer in node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(module: str, cwd: Path, overrides: list[str], timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <overrides>`` in ``cwd`` with this repository importable; output captured."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The ``error: ...`` line of a command that refused its input: exit 1, that one line on stderr, no
    traceback. Fails (``AssertionError`` with the end of stderr) on any other answer."""
    tail = proc.stderr[-3000:]
    assert proc.returncode == 1, f"exit {proc.returncode}: {tail}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), tail
    assert "Traceback" not in proc.stdout + proc.stderr, tail
    return lines[0]


def main_error(main: Callable[[Sequence[str]], object], argv: list[str],
               capsys: pytest.CaptureFixture[str]) -> str:
    """The ``error: ...`` line of a command's ``main(argv)`` (decorated with
    :func:`core.errors.exit_on_user_error`) called in this process: exit 1 and that one line on stderr.
    Fails on any other answer."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def run_js(source: str) -> Any:
    """Run an ES module in node from the viewer's folder (its modules importable as ``./camera.js``...);
    return the JSON it prints. Fails (never skips) without node: CI installs it with npm."""
    from export.viewer.page import WEB_DIR

    node = shutil.which("node")
    assert node, "node is needed for the viewer's JS tests (it is installed with npm)"
    out = subprocess.run([node, "--input-type=module", "-e", source], cwd=WEB_DIR, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def blocking_imports(blocked: set[str]) -> str:
    """Python source that makes every module under the top-level names ``blocked`` unimportable (a
    ``sys.meta_path`` finder raising ``ImportError``): the start of a ``python -c`` script proving that
    what follows needs none of them (the torch-free runtime)."""
    return (
        "import sys\n\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {sorted(blocked)!r}:\n"
        "            raise ImportError('blocked: ' + name)\n\n"
        "sys.meta_path.insert(0, Block())\n"
    )

