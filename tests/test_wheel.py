"""``pip install .`` (not editable) gets every file the stages need: build a wheel offline and look inside.

The wheel is built from a copy of the working tree (without ``.git``, ``.venv``, ``node_modules`` and run
folders), so the build leaves nothing (``build/``, ``*.egg-info``) in the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = (".git", ".venv", "runs", "outputs", "node_modules", "build", "*.egg-info", "__pycache__",
            ".*_cache")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The file names inside a wheel of this project (``pip wheel --no-deps --no-build-isolation``: the
    venv's setuptools, no network)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = Path(shutil.copytree(REPO, tmp / "src", ignore=shutil.ignore_patterns(*LEFT_OUT)))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _repo_files(*patterns: str) -> list[str]:
    return sorted(p.relative_to(REPO).as_posix() for pattern in patterns for p in REPO.glob(pattern))


def test_viewer_page_is_in_the_wheel(wheel_names: set[str]) -> None:
    from export.viewer.page import PAGE_FILES

    page = [f"export/viewer/web/{name}" for name in PAGE_FILES]
    assert "export/viewer/web/hashgrid.wasm" in page and "export/viewer/web/index.html" in page
    needed = page + _repo_files("export/viewer/web/*.js", "export/viewer/web/package*.json",
                                "export/viewer/web/hashgrid.wat", "export/viewer/*.py")
    assert set(needed) <= wheel_names, sorted(set(needed) - wheel_names)


def test_kernel_sources_configs_and_demo_scene_are_in_the_wheel(wheel_names: set[str]) -> None:
    kernels = _repo_files("cuda/*.cpp", "cuda/*.cu", "cuda/*.h", "cuda/*.cuh")
    assert any(k.endswith(".cu") for k in kernels) and any(k.endswith(".cpp") for k in kernels)
    configs = _repo_files("conf/*.yaml", "conf/*/*.yaml")
    assert "conf/teacher.yaml" in configs and "conf/student_profile/gpu.yaml" in configs
    scene = _repo_files("scenes/data/mic_100/*.json", "scenes/data/mic_100/*/*.png")
    assert "scenes/data/mic_100/transforms_train.json" in scene and len(scene) > 100
    runtime = _repo_files("export/runtime/*.py")
    needed = kernels + configs + scene + runtime
    assert set(needed) <= wheel_names, sorted(set(needed) - wheel_names)


def test_every_package_and_no_test_tooling_in_the_wheel(wheel_names: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names if not name.split("/")[0].endswith(".dist-info")}
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    tooling = {"tests", "testing", "benchmarks", "scripts"}
    assert tops == packages - tooling, tops ^ (packages - tooling)
    modules = _repo_files(*(f"{pkg}/**/*.py" for pkg in packages - tooling))
    assert set(modules) <= wheel_names, sorted(set(modules) - wheel_names)
