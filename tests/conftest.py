"""Shared fixtures and skip markers (defined once, here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.scenes import make_procedural_scene

HAS_CUDA = torch.cuda.is_available()
HAS_NVCC = shutil.which("nvcc") is not None
HAS_CXX = shutil.which("c++") is not None or shutil.which("g++") is not None

try:  # tiny-cuda-nn raises OSError, not ImportError, when CUDA is missing
    import tinycudann  # noqa: F401

    HAS_TCNN = HAS_CUDA
except (ImportError, OSError):
    HAS_TCNN = False

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
requires_tcnn = pytest.mark.skipif(not HAS_TCNN, reason="needs tiny-cuda-nn and a CUDA GPU")
requires_nvcc = pytest.mark.skipif(not HAS_NVCC, reason="needs nvcc on the PATH")
requires_cxx = pytest.mark.skipif(not HAS_CXX, reason="needs a C++ compiler")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic"


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16x16 procedural sphere scene in Blender format (8 train, 2 val, 2 test views)."""
    return make_procedural_scene(tmp_path_factory.mktemp("tiny_scene"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
