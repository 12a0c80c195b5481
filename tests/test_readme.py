"""The README cannot go stale: every command it shows is exercised somewhere named, every module it runs
resolves, every repository path and RESULTS section it names exists.

Nothing here runs a command: each command of the README's shell blocks must be a key of
:data:`EXERCISED`, which names where it is run (a test, read from its file's AST, or a CI file), so a new
README command without an entry fails, a renamed test fails, and a renamed module or path fails. Also
checks the import table of ``docs/architecture.md`` against ``tests/test_imports.py``'s rules.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ARCHITECTURE = REPO / "docs" / "architecture.md"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DEMO = REPO / "scripts" / "demo.sh"
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
MAX_LINES = 150

# Where each stage that scripts/demo.sh runs is exercised: a test that runs the stage (its ``run`` or its
# command line). No test runs scripts/demo.sh itself (the demo takes 12 minutes or more), so demo.sh is
# covered stage by stage, plus the in-process chain of the training stages.
STAGES: dict[str, tuple[str, ...]] = {
    "teacher.train": ("tests/test_teacher_train.py::test_run_trains_evaluates_and_writes_outputs",
                      "tests/test_teacher_train.py::test_bad_scene_exits_with_one_line_error"),
    "data_gen.render": ("tests/test_data_gen.py::test_round_trip_matches_the_teacher",
                        "tests/test_data_gen.py::test_cli_prints_one_line_error_and_exits_1"),
    "student.train": ("tests/test_student_train.py::test_distill_then_finetune_writes_outputs",
                      "tests/test_student_ddp.py::test_ddp_two_processes_runs_and_loss_falls"),
    "export.onnx": ("tests/test_export.py::test_files_checked_and_shaped",
                    "tests/test_export.py::test_export_cli_missing_checkpoint_is_one_line"),
    "export.runtime.render": ("tests/test_export_render.py::test_render_two_orbit_frames",
                              "tests/test_export_render.py::test_render_cli_errors_are_one_line"),
    "export.viewer": ("tests/test_viewer.py::test_viewer_stage_takes_a_screenshot",),
    "report": ("tests/test_student_train.py::test_distill_then_finetune_writes_outputs",),
}
CHAIN = "tests/test_forward_pipeline.py::test_forward_scene_through_every_stage"

# README command (its comment and extra spaces removed) -> where it is exercised:
#   "tests/<file>.py::<test>"  a test that runs the command or the code path it runs;
#   "ci:<file>"                a CI file that runs the command as written;
#   "stages:scripts/demo.sh"   every stage of demo.sh has its tests in STAGES (checked below).
EXERCISED: dict[str, tuple[str, ...]] = {
    "scripts/demo.sh": ("stages:scripts/demo.sh", CHAIN),
    "scripts/test.sh": ("ci:.ci/run",),
    "python -m teacher.train train.max_seconds=600": (
        "tests/test_teacher_train.py::test_run_trains_evaluates_and_writes_outputs",
        "tests/test_teacher_train.py::test_training_budget_counts_across_resumes"),
    "python -m student.train model.encoding=pe model.depth=8": (
        "tests/test_student_train.py::test_distill_then_finetune_writes_outputs",
        "tests/test_cli_errors.py::test_student_bad_encoding_is_one_line"),
    "python -m export.runtime.render video=gif": (
        "tests/test_export_render.py::test_render_nerfstudio_camera_path_gif",
        "tests/test_export_render.py::test_render_cli_errors_are_one_line"),
    "python -m scenes.colmap photos/ scene/": (
        "tests/test_colmap.py::test_pycolmap_recovers_known_poses",
        "tests/test_colmap.py::test_too_few_registered_exits_1_with_one_line"),
    "scripts/demo.sh scene.path=scene/": (
        "stages:scripts/demo.sh", CHAIN,
        "tests/test_core_metrics_io.py::test_run_dir_is_named_after_the_scene"),
    "python -m export.viewer scene.path=scene/ serve=true": (
        "tests/test_viewer.py::test_viewer_stage_takes_a_screenshot",
        "tests/test_viewer.py::test_page_frame_equals_python_runtime"),
}


def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` outside quotes that starts a word)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(markdown: str) -> list[str]:
    """Every command of the fenced shell blocks of ``markdown``, whitespace-normalised, in order."""
    commands, block, pending = [], None, ""
    for line in markdown.splitlines():
        fence = re.match(r"^\s*```(\S*)", line)
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block not in SHELL_BLOCKS:
            continue
        text = pending + _strip_comment(line).strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text:
            commands.append(" ".join(text.split()))
    return commands


@functools.cache
def readme() -> str:
    return README.read_text()


@functools.cache
def _functions(path: Path) -> frozenset[str]:
    """``name`` of every module-level function and ``Class::method`` of a test file, from its AST."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {f"{node.name}::{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return frozenset(names)


def _demo_stages() -> list[str]:
    return re.findall(r"^python -m ([\w.]+) \"\$@\"$", DEMO.read_text(), re.M)


def place_problem(place: str) -> str | None:
    """Why ``place`` (an entry of :data:`EXERCISED` or :data:`STAGES`) does not exist, or None."""
    if place.startswith("ci:"):
        return None if (REPO / place[3:]).is_file() else f"{place}: no such file"
    if place.startswith("stages:"):
        missing = [m for m in _demo_stages() if m not in STAGES]
        return f"{place}: stages without tests in STAGES: {missing}" if missing else None
    file, sep, test = place.partition("::")
    path = REPO / file
    if not sep or not path.is_file():
        return f"{place}: not <test file>::<test> of an existing file"
    return None if test.split("[")[0] in _functions(path) else f"{place}: {file} defines no {test}"


def test_readme_is_a_short_guide() -> None:
    lines = len(readme().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}): move detail to docs/"


def test_every_readme_command_is_exercised() -> None:
    shown = shell_commands(readme())
    assert shown, "no shell block found in README.md"
    unmapped = [c for c in shown if c not in EXERCISED]
    assert not unmapped, f"README commands with no test in EXERCISED: {unmapped}"
    stale = [c for c in EXERCISED if c not in shown]
    assert not stale, f"EXERCISED entries the README no longer shows: {stale}"


def test_every_place_named_exists() -> None:
    places = {p for ps in (*EXERCISED.values(), *STAGES.values()) for p in ps}
    problems = [problem for p in sorted(places) if (problem := place_problem(p))]
    assert not problems, problems


def test_ci_files_run_what_they_are_named_for() -> None:
    for command, places in EXERCISED.items():
        for place in places:
            if place.startswith("ci:"):
                assert command in (REPO / place[3:]).read_text(), f"{place} does not run {command}"


def test_demo_runs_every_stage_in_order() -> None:
    assert _demo_stages() == list(STAGES), "scripts/demo.sh and STAGES name other stages"


def _modules_named(text: str) -> set[str]:
    return set(re.findall(r"python -m ([A-Za-z_][\w.]*[\w])", text))


def test_every_module_the_readme_runs_resolves() -> None:
    modules = _modules_named(readme())
    assert "teacher.train" in modules
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"python -m {name}: no such module"
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            assert importlib.util.find_spec(f"{name}.__main__") is not None, f"python -m {name}: no __main__"


def _repo_paths(text: str) -> set[str]:
    """Repository paths the text names: every relative link target, and each word of inline code that is
    a path whose first component is a top-level entry of the repository (``runs/`` is output)."""
    tops = {p.name for p in REPO.iterdir()} - {"runs", ".venv"}
    found = {target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in target}
    for code in re.findall(r"`([^`\n]+)`", text):
        for word in code.split():
            word = word.strip("'\",;:()")
            if word.split("/")[0] in tops and ("/" in word or "." in word) and "=" not in word:
                found.add(word)
    return found


def test_every_repo_path_the_readme_names_exists() -> None:
    paths = _repo_paths(readme())
    assert "scripts/demo.sh" in paths and "docs/architecture.md" in paths
    missing = sorted(p for p in paths if not ((REPO / p).exists() or list(REPO.glob(p))))
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_every_results_section_the_readme_links_exists() -> None:
    sections = re.findall(r"benchmarks/RESULTS\.md#([\w-]+)", readme())
    assert sections
    text = RESULTS.read_text()
    missing = [s for s in sections if f"<!-- BEGIN {s} -->" not in text]
    assert not missing, f"RESULTS.md has no section {missing}"


def _import_table() -> dict[str, str]:
    """docs/architecture.md's "Who may import whom": package path -> its "may import" cell."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Who may import whom"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            for package in re.findall(r"`([\w/]+?)/?`", cells[0]):
                rows[package] = cells[1]
    return rows


def test_architecture_import_table_matches_the_import_rules() -> None:
    from tests.test_imports import ALLOWED, FREE, OURS, STRICT, STRICT_SUBPACKAGES

    rows = _import_table()
    for package, allowed in ALLOWED.items():
        assert package in rows, f"docs/architecture.md: no row for {package}/"
        cell = rows[package]
        named = set(re.findall(r"`([\w.]+)`", cell.split("(")[0]))  # a parenthesis holds a remark
        if cell.startswith("anything but"):
            assert OURS - named == allowed, (package, cell)
        elif cell.startswith("nothing of ours"):
            assert allowed == set(), (package, cell)
        else:
            assert named == allowed - {package}, (package, cell)
    for package in FREE:
        assert rows.get(package, "").startswith("anything"), f"architecture.md: {package}/ imports anything"
    for folder, (_, forbidden) in STRICT.items():
        cell = rows.get(folder, "")
        named = set(re.findall(r"`([\w.]+)`", cell.split("(")[0]))
        assert named == set(STRICT_SUBPACKAGES[folder]), (folder, cell)
        assert all(name in cell for name in forbidden), (folder, cell)


@pytest.mark.parametrize("block, expected", [
    ("```bash\nscripts/demo.sh   # all\n```", ["scripts/demo.sh"]),
    ("```bash\npython -m x a=1 \\\n    b='#c'  # note\n```\n```text\npython -m y\n```",
     ["python -m x a=1 b='#c'"]),
])
def test_command_extraction(block: str, expected: list[str]) -> None:
    assert shell_commands(block) == expected
