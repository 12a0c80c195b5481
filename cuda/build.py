"""Lazy build and load of our compiled kernels with ``torch.utils.cpp_extension``.

Nothing compiles at import time. The first call of :func:`load_hashgrid_extension` compiles the C++
sources of this folder (and the CUDA ones when torch has CUDA) with ninja, caches the result in torch's
extensions folder (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), and logs one line.
Later calls, and later processes, reuse the cached build; torch rebuilds when a source or flag changes.

The CPU build uses ``-O3 -march=native``: the binary is specific to the machine that built it, so the
extension name carries a tag of this CPU's instruction sets (a cache folder shared between machines
cannot hand one machine another's binary).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
CPU_SOURCES = ["hashgrid_bind.cpp", "hashgrid_cpu.cpp"]
CUDA_SOURCES = ["hashgrid_cuda.cu"]
HEADERS = ["hashgrid_common.h", "hashgrid_kernels.h"]
# -ffp-contract=off: x * scale + 0.5 must round twice, like PyTorch, or points on cell faces change cell.
CXX_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]
CUDA_FLAGS = ["-O3", "-DHG_WITH_CUDA"]

_lock = threading.Lock()
_modules: dict[bool, ModuleType] = {}
_failures: dict[bool, str] = {}
_warned: set[bool] = set()


class KernelBuildError(RuntimeError):
    """The compiled kernels are not available here (no compiler, or the build failed)."""


def compiler_available() -> bool:
    """Whether a C++ compiler (``$CXX`` or ``c++``) is on the PATH."""
    return shutil.which(os.environ.get("CXX", "c++")) is not None


def _machine_tag() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


def load_hashgrid_extension(with_cuda: bool = False) -> ModuleType:
    """Build (first time only) and import the hash-grid extension.

    Args:
        with_cuda: also compile the CUDA kernels (needs torch with CUDA and nvcc).

    Raises:
        KernelBuildError: no compiler, no CUDA toolchain, or the build failed (the message says which).
    """
    with _lock:
        if with_cuda in _modules:
            return _modules[with_cuda]
        if with_cuda in _failures:
            raise KernelBuildError(_failures[with_cuda])
        try:
            module = _build(with_cuda)
        except KernelBuildError as err:
            _failures[with_cuda] = str(err)
            raise
        _modules[with_cuda] = module
        return module


def _build(with_cuda: bool) -> ModuleType:
    from torch.utils import cpp_extension

    kind = "CUDA" if with_cuda else "CPU"
    if not compiler_available():
        raise KernelBuildError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on the PATH")
    if with_cuda and (torch.version.cuda is None or cpp_extension.CUDA_HOME is None):
        raise KernelBuildError("torch has no CUDA, or CUDA_HOME (nvcc) was not found")
    sources = CPU_SOURCES + (CUDA_SOURCES if with_cuda else [])
    name = f"lfd_hashgrid_{kind.lower()}_{_machine_tag()}"
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    log.info("loading the %s hash-grid kernel %s (compiled on first use, about a minute; cached in %s)",
             kind, name, root)
    start = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=name,
            sources=[str(SOURCE_DIR / s) for s in sources],
            extra_cflags=CXX_FLAGS + (["-DHG_WITH_CUDA"] if with_cuda else []),
            extra_cuda_cflags=CUDA_FLAGS,
            extra_ldflags=["-fopenmp"],
            extra_include_paths=[str(SOURCE_DIR)],
            with_cuda=with_cuda,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as err:  # cpp_extension raises RuntimeError on build errors
        last = str(err).strip().splitlines()[-1:] or [""]
        raise KernelBuildError(f"building {name} failed: {last[0]}") from err
    log.debug("%s hash-grid kernel ready in %.1f s", kind, time.perf_counter() - start)
    return module


def try_load_hashgrid_extension(with_cuda: bool = False) -> ModuleType | None:
    """Like :func:`load_hashgrid_extension`, but ``None`` (and one warning per process) on failure."""
    try:
        return load_hashgrid_extension(with_cuda)
    except KernelBuildError as err:
        if with_cuda not in _warned:
            _warned.add(with_cuda)
            log.warning("compiled %s hash-grid kernel unavailable (%s): using a slower backend",
                        "CUDA" if with_cuda else "CPU", err)
        return None
