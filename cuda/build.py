"""Lazy build and load of our compiled kernels with ``torch.utils.cpp_extension``.

Two extensions (:data:`EXTENSIONS`): ``hashgrid`` (the hash-grid kernels, CPU and CUDA) and ``planes`` (the
feature-plane lookup of the image student's training, CPU only: on a GPU PyTorch's ``grid_sample`` is fast).
Nothing compiles at import time. The first call of :func:`load_extension` compiles an extension's C++
sources (and its CUDA ones when torch has CUDA) with ninja, caches the result in torch's
extensions folder (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), and logs one line.
Later calls, and later processes, reuse the cached build; torch rebuilds when a source or flag changes.

The CPU build uses ``-O3 -march=native``: the binary is specific to the machine that built it, so the
extension name carries a tag of this CPU's instruction sets (a cache folder shared between machines
cannot hand one machine another's binary).

torch's build lock (``<build dir>/lock``, a ``FileBaton`` without a pid) stays behind when a build is
killed, and torch then waits for it forever. Before building, :func:`wait_for_build_lock` waits for a lock
at most ``$LFD_BUILD_LOCK_WAIT`` seconds (default :data:`LOCK_WAIT_SECONDS`), and less when no process
of this machine holds it open (the baton keeps its file descriptor open while its owner builds); a lock
that stays is reported and the kernel is not used (callers fall back to the reference backend with one
warning naming the lock). It is never deleted here: another machine or container sharing the cache
folder may be building, and two builds writing one folder would be worse than a slower backend.
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
EXTENSIONS = {  # name -> (CPU sources, CUDA sources, what the log calls it)
    "hashgrid": (CPU_SOURCES, CUDA_SOURCES, "hash-grid kernel"),
    "planes": (["planes_cpu.cpp"], [], "plane-lookup kernel"),
}
# -ffp-contract=off: x * scale + 0.5 must round twice, like PyTorch, or points on cell faces change cell.
CXX_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]
CUDA_FLAGS = ["-O3", "-DHG_WITH_CUDA"]

LOCK_WAIT_SECONDS = 300.0  # a first CPU build takes about a minute; a CUDA one several
LOCK_WAIT_ENV = "LFD_BUILD_LOCK_WAIT"

_lock = threading.Lock()
_modules: dict[tuple[str, bool], ModuleType] = {}  # (extension, with CUDA) ->
_failures: dict[tuple[str, bool], str] = {}
_warned: set[tuple[str, bool]] = set()


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
    """Build (first time only) and import the hash-grid extension (:func:`load_extension`)."""
    return load_extension("hashgrid", with_cuda)


def load_extension(name: str, with_cuda: bool = False) -> ModuleType:
    """Build (first time only) and import one of :data:`EXTENSIONS`.

    Args:
        name: ``hashgrid`` or ``planes``.
        with_cuda: also compile the CUDA kernels (needs torch with CUDA and nvcc).

    Raises:
        KernelBuildError: no compiler, no CUDA toolchain or CUDA sources, or the build failed (the message
            says which).
    """
    key = (name, with_cuda)
    with _lock:
        if key in _modules:
            return _modules[key]
        if key in _failures:
            raise KernelBuildError(_failures[key])
        try:
            module = _build(name, with_cuda)
        except KernelBuildError as err:
            _failures[key] = str(err)
            raise
        _modules[key] = module
        return module


def _build(name: str, with_cuda: bool) -> ModuleType:
    from torch.utils import cpp_extension

    cpu_sources, cuda_sources, label = EXTENSIONS[name]
    kind = "CUDA" if with_cuda else "CPU"
    if not compiler_available():
        raise KernelBuildError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on the PATH")
    if with_cuda and not cuda_sources:
        raise KernelBuildError(f"the {label} has no CUDA sources")
    if with_cuda and (torch.version.cuda is None or cpp_extension.CUDA_HOME is None):
        raise KernelBuildError("torch has no CUDA, or CUDA_HOME (nvcc) was not found")
    sources = cpu_sources + (cuda_sources if with_cuda else [])
    full_name = f"lfd_{name}_{kind.lower()}_{_machine_tag()}"
    build_dir = Path(cpp_extension._get_build_directory(full_name, verbose=False))  # where torch locks
    log.info("loading the %s %s %s (compiled on first use, about a minute; cached in %s)",
             kind, label, full_name, build_dir)
    wait_for_build_lock(build_dir / "lock")
    start = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=full_name,
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
        raise KernelBuildError(f"building {full_name} failed: {last[0]}") from err
    log.debug("%s %s ready in %.1f s", kind, label, time.perf_counter() - start)
    return module


def wait_for_build_lock(lock: Path, wait_s: float | None = None) -> None:
    """Return once torch's build lock ``lock`` is gone (or was never there).

    Args:
        lock: ``<build dir>/lock``.
        wait_s: the longest wait; None: ``$LFD_BUILD_LOCK_WAIT`` or :data:`LOCK_WAIT_SECONDS`.

    Raises:
        KernelBuildError: naming ``lock``, when it is still there after ``wait_s`` seconds, or when twice in
            a row no process of this machine holds it open (a killed build left it).
    """
    if wait_s is None:
        wait_s = _lock_wait_seconds()
    start = time.monotonic()
    orphaned = 0
    while lock.exists():
        holders = _lock_holders(lock)
        orphaned = orphaned + 1 if holders == [] else 0  # twice: not the instant between close and remove
        waited = time.monotonic() - start
        if orphaned >= 2 or waited >= wait_s:
            why = ("no running process holds it (a killed build left it?)" if orphaned >= 2
                   else f"still held after {waited:.0f} s")
            raise KernelBuildError(f"build lock {lock}: {why}; delete it if no kernel build is running")
        time.sleep(max(0.0, min(0.5, wait_s - waited)))


def _lock_wait_seconds() -> float:
    value = os.environ.get(LOCK_WAIT_ENV)
    if value is None:
        return LOCK_WAIT_SECONDS
    try:
        return max(0.0, float(value))
    except ValueError:
        raise KernelBuildError(f"${LOCK_WAIT_ENV}={value!r} is not a number of seconds") from None


def _lock_holders(lock: Path) -> list[int] | None:
    """PIDs of this machine's processes with ``lock`` open (those this user may inspect), or None where
    ``/proc`` cannot tell."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    target = os.path.realpath(lock)
    holders = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # another user's process, or one that just ended
            continue
        if any(_readlink(fd) == target for fd in fds):
            holders.append(int(entry.name))
    return holders


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:  # closed since it was listed
        return None


def try_load_hashgrid_extension(with_cuda: bool = False) -> ModuleType | None:
    """Like :func:`load_hashgrid_extension`, but ``None`` (and one warning per process) on failure."""
    return try_load_extension("hashgrid", with_cuda)


def try_load_extension(name: str, with_cuda: bool = False) -> ModuleType | None:
    """Like :func:`load_extension`, but ``None`` (and one warning per process and extension) on failure."""
    try:
        return load_extension(name, with_cuda)
    except KernelBuildError as err:
        if (name, with_cuda) not in _warned:
            _warned.add((name, with_cuda))
            log.warning("compiled %s %s unavailable (%s): using a slower backend",
                        "CUDA" if with_cuda else "CPU", EXTENSIONS[name][2], err)
        return None
